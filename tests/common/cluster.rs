//! Helpers for the multi-node tests (tests/replication.rs, tests/cluster_*.rs): replicating
//! nodes, membership and link waits, table reads and writes by table name, the config file.
//! Every wait is bounded; `holds_for` is only for "this must not
//! happen" windows, never for synchronisation.

#![allow(dead_code)]

use super::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Generous bound for anything replication should do.
pub const T: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

/// The `replication:` section of a node named `ip` listening on `ip:9933`.
pub fn repl_yaml(ip: &str) -> String {
    format!("replication:\n  hostname: {ip}\n  port: \"{ip}:9933\"\n  pingInterval: 1s\n")
}

/// Same, with `auditRetention` (e.g. "3s").
pub fn repl_yaml_retention(ip: &str, retention: &str) -> String {
    format!("{}  auditRetention: {retention}\n", repl_yaml(ip))
}

pub fn start_repl(ip: &str) -> TestNode {
    TestNode::start(ip, &repl_yaml(ip))
}

/// Starts the nodes in parallel (plain replicating nodes).
pub fn start_all(ips: &[String]) -> Vec<TestNode> {
    start_all_with(ips, repl_yaml)
}

/// Starts the nodes in parallel with the yaml `f(ip)`.
pub fn start_all_with(ips: &[String], f: impl Fn(&str) -> String + Sync) -> Vec<TestNode> {
    std::thread::scope(|s| {
        let hs: Vec<_> = ips
            .iter()
            .map(|ip| {
                let f = &f;
                s.spawn(move || TestNode::start(ip, &f(ip)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

pub fn refs(nodes: &[TestNode]) -> Vec<&TestNode> {
    nodes.iter().collect()
}

/// An address of the same test range where nothing listens (`127.<suite>.<k>.250`; the
/// harness hands out 1..=240).
pub fn ghost(ip: &str) -> String {
    format!("{}.250", ip.rsplit_once('.').unwrap().0)
}

pub fn creds() -> Value {
    json!({"username": USER, "password": PASS})
}

/// `add_node` of `host` on `on`, with credentials; must succeed cleanly.
pub fn add_node(on: &TestNode, host: &str) {
    add_node_with(on, host, json!({}));
}

/// `add_node` of `host` on `on` with credentials and the extra fields of `extra` (an object).
pub fn add_node_with(on: &TestNode, host: &str, extra: Value) {
    let mut body = json!({"operation":"add_node","hostname":host,"authorization":creds()});
    for (k, v) in extra.as_object().expect("extra fields object") {
        body[k] = v.clone();
    }
    let r = on.ok(body);
    assert_eq!(
        r,
        json!({"message": format!("Successfully added '{host}' to cluster")}),
        "add_node {host} on {}",
        on.ip
    );
}

// ---------------------------------------------------------------------------------------------
// cluster_status
// ---------------------------------------------------------------------------------------------

pub fn status(n: &TestNode) -> Value {
    n.ok(json!({"operation":"cluster_status"}))
}

pub fn connection<'a>(st: &'a Value, peer: &str) -> Option<&'a Value> {
    st["connections"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == peer)
}

pub fn socket<'a>(st: &'a Value, peer: &str, db: &str) -> Option<&'a Value> {
    connection(st, peer)?["database_sockets"]
        .as_array()?
        .iter()
        .find(|s| s["database"] == db)
}

pub fn peer_names(st: &Value) -> BTreeSet<String> {
    st["connections"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `st` shows `peer` connected for every database in `dbs`.
pub fn link_up(st: &Value, peer: &str, dbs: &[&str]) -> bool {
    dbs.iter()
        .all(|db| socket(st, peer, db).is_some_and(|s| s["connected"] == true))
}

/// Every node lists exactly the others, all connected on `dbs`.
pub fn mesh_up(nodes: &[&TestNode], dbs: &[&str]) -> bool {
    nodes.iter().all(|n| {
        let st = status(n);
        let others: BTreeSet<String> = nodes
            .iter()
            .filter(|m| m.ip != n.ip)
            .map(|m| m.ip.clone())
            .collect();
        peer_names(&st) == others && others.iter().all(|p| link_up(&st, p, dbs))
    })
}

pub fn dump(nodes: &[&TestNode]) -> String {
    nodes
        .iter()
        .map(|n| {
            format!(
                "--- cluster_status of {} ---\n{}\n",
                n.ip,
                serde_json::to_string_pretty(&n.op(json!({"operation":"cluster_status"})).1)
                    .unwrap()
            )
        })
        .collect()
}

pub fn wait_mesh(nodes: &[&TestNode], dbs: &[&str]) {
    let t0 = Instant::now();
    assert!(
        wait_until(T, || mesh_up(nodes, dbs)),
        "no full mesh on {dbs:?} after {:?}:\n{}",
        t0.elapsed(),
        dump(nodes)
    );
}

/// Waits until `n` shows `peer` connected on `dbs`.
pub fn wait_link(n: &TestNode, peer: &str, dbs: &[&str]) {
    assert!(
        wait_until(T, || link_up(&status(n), peer, dbs)),
        "{} never shows {peer} connected on {dbs:?}:\n{}",
        n.ip,
        dump(&[n])
    );
}

/// Observes `f` for `d`: false as soon as `f` is false once. For "this must not happen" checks
/// only, never as synchronisation.
pub fn holds_for(d: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + d;
    loop {
        if !f() {
            return false;
        }
        if Instant::now() > end {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Tables and records (database `dev`)
// ---------------------------------------------------------------------------------------------

pub fn create_table(n: &TestNode, table: &str) {
    n.ok(json!({"operation":"create_table","database":"dev","table":table,"primary_key":"id"}));
}

/// Starts `ips`, adds the others from the first (full replication) and creates `tables` on the
/// first once the mesh is up, waiting until they and the dev sockets are everywhere.
pub fn full_mesh_with_tables(ips: &[String], tables: &[&str]) -> Vec<TestNode> {
    let nodes = start_all(ips);
    for n in &nodes[1..] {
        add_node(&nodes[0], &n.ip);
    }
    let all = refs(&nodes);
    wait_mesh(&all, &["system"]);
    for t in tables {
        create_table(&nodes[0], t);
    }
    for t in tables {
        wait_table(&all, t);
    }
    wait_mesh(&all, &["system", "dev"]);
    nodes
}

pub fn has_table(n: &TestNode, table: &str) -> bool {
    n.op(json!({"operation":"describe_table","database":"dev","table":table}))
        .0
        == 200
}

pub fn wait_table(nodes: &[&TestNode], table: &str) {
    assert!(
        wait_until(T, || nodes.iter().all(|n| has_table(n, table))),
        "dev.{table} did not reach every node:\n{}",
        dump(nodes)
    );
}

pub fn record_count(n: &TestNode, table: &str) -> Option<u64> {
    let (s, r) = n.op(json!({"operation":"describe_table","database":"dev","table":table}));
    (s == 200).then(|| r["record_count"].as_u64()).flatten()
}

/// Every record of dev.`table` by id (as JSON text); empty if the table does not exist (yet).
pub fn records(n: &TestNode, table: &str) -> BTreeMap<String, Value> {
    let (s, r) = n.op(
        json!({"operation":"search_by_value","database":"dev","table":table,
        "attribute":"id","value":"*","get_attributes":["*"]}),
    );
    if s != 200 {
        return BTreeMap::new();
    }
    r.as_array()
        .expect("search_by_value returns an array")
        .iter()
        .map(|rec| (rec["id"].to_string(), rec.clone()))
        .collect()
}

/// The primary keys of dev.`table` (as JSON text).
pub fn keys(n: &TestNode, table: &str) -> BTreeSet<String> {
    let (s, r) = n.op(
        json!({"operation":"search_by_value","database":"dev","table":table,
        "attribute":"id","value":"*","get_attributes":["id"]}),
    );
    if s != 200 {
        return BTreeSet::new();
    }
    r.as_array()
        .expect("search_by_value returns an array")
        .iter()
        .map(|rec| rec["id"].to_string())
        .collect()
}

pub fn get(n: &TestNode, table: &str, id: &Value) -> Option<Value> {
    let (s, r) = n.op(
        json!({"operation":"search_by_hash","database":"dev","table":table,
        "hash_values":[id],"get_attributes":["*"]}),
    );
    if s != 200 {
        return None;
    }
    r.as_array().and_then(|a| a.first().cloned())
}

pub fn has(n: &TestNode, table: &str, id: &str) -> bool {
    get(n, table, &json!(id)).is_some()
}

pub fn insert(n: &TestNode, table: &str, recs: Value) -> Value {
    let len = recs.as_array().map_or(0, Vec::len);
    // With `txn_time` (opt-in): replication tests compare it with the versions peers keep.
    let r = n.ok(
        json!({"operation":"insert","database":"dev","table":table,"records":recs,"write_details":true}),
    );
    assert_eq!(
        r["message"],
        format!("inserted {len} of {len} records"),
        "insert into {table} on {}",
        n.ip
    );
    r
}

/// Inserts one record `{id}` into dev.`table`.
pub fn put(n: &TestNode, table: &str, id: &str) {
    insert(n, table, json!([{ "id": id, "by": n.ip }]));
}

pub fn delete(n: &TestNode, table: &str, ids: Value) -> Value {
    n.ok(
        json!({"operation":"delete","database":"dev","table":table,"ids":ids,"write_details":true}),
    )
}

/// Waits until record `id` of dev.`table` is on every node in `nodes`.
pub fn wait_present(nodes: &[&TestNode], table: &str, id: &str) {
    for n in nodes {
        assert!(
            wait_until(T, || has(n, table, id)),
            "record {table}/{id} never reached {}:\n{}",
            n.ip,
            dump(nodes)
        );
    }
}

pub fn diff(
    a_name: &str,
    a: &BTreeMap<String, Value>,
    b_name: &str,
    b: &BTreeMap<String, Value>,
) -> String {
    let only_a: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).take(5).collect();
    let only_b: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).take(5).collect();
    let differ: Vec<_> = a
        .iter()
        .filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v))
        .take(3)
        .map(|(k, v)| format!("{k}: {v} vs {}", b[k]))
        .collect();
    format!(
        "{a_name}: {} records, {b_name}: {} records; only on {a_name} (first 5): {only_a:?}; only on {b_name}: {only_b:?}; different: {differ:?}",
        a.len(),
        b.len()
    )
}

/// Key-set difference, for large tables.
pub fn key_diff(a: &BTreeSet<String>, b: &BTreeSet<String>) -> String {
    let missing: Vec<_> = a.difference(b).take(10).collect();
    let extra: Vec<_> = b.difference(a).take(10).collect();
    format!(
        "{} vs {} keys; missing (first 10): {missing:?}; extra (first 10): {extra:?}",
        a.len(),
        b.len()
    )
}

/// Waits until every node holds the same records of dev.`table` (and `expect` of them when
/// given); returns them.
pub fn wait_converged(
    nodes: &[&TestNode],
    table: &str,
    expect: Option<usize>,
    timeout: Duration,
) -> BTreeMap<String, Value> {
    let mut last = String::new();
    let mut result = BTreeMap::new();
    let t0 = Instant::now();
    let ok = wait_until(timeout, || {
        let counts: Vec<_> = nodes.iter().map(|n| record_count(n, table)).collect();
        if counts.iter().any(|c| c.is_none() || *c != counts[0])
            || expect.is_some_and(|e| counts[0] != Some(e as u64))
        {
            last = format!("record counts {counts:?}, expected {expect:?}");
            return false;
        }
        let first = records(nodes[0], table);
        for n in &nodes[1..] {
            let other = records(n, table);
            if other != first {
                last = diff(&nodes[0].ip, &first, &n.ip, &other);
                return false;
            }
        }
        result = first;
        true
    });
    assert!(
        ok,
        "no convergence of dev.{table} after {:?}: {last}\n{}",
        t0.elapsed(),
        dump(nodes)
    );
    result
}

/// Inserts `total` small records (ids 0..total) into dev.`table` in batches of `batch`, spread
/// round-robin over `writers`.
pub fn insert_batches(writers: &[&TestNode], table: &str, total: usize, batch: usize) {
    for (b, start) in (0..total).step_by(batch).enumerate() {
        let w = writers[b % writers.len()];
        let recs: Vec<Value> = (start..(start + batch).min(total))
            .map(|i| json!({"id": i, "name": format!("dog-{i}"), "batch": b, "owner": w.ip}))
            .collect();
        insert(w, table, Value::Array(recs));
    }
}

/// The audit log of dev.`table` on `n`.
pub fn audit_log(n: &TestNode, table: &str) -> Vec<Value> {
    let r = n.ok(json!({"operation":"read_audit_log","database":"dev","table":table}));
    r.as_array().cloned().expect("audit log array")
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

/// Adds a non-super_user role and a user `<name>` (password `pw`) holding it.
pub fn add_plain_user(n: &TestNode, name: &str) {
    let role = format!("{name}_role");
    n.ok(json!({"operation":"add_role","role":role,"permission":{"super_user":false}}));
    n.ok(json!({"operation":"add_user","role":role,"username":name,"password":"pw","active":true}));
}

pub fn user_names(n: &TestNode) -> BTreeSet<String> {
    n.ok(json!({"operation":"list_users"}))
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u["username"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn role_names(n: &TestNode) -> BTreeSet<String> {
    n.ok(json!({"operation":"list_roles"}))
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u["role"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Config file, log, time
// ---------------------------------------------------------------------------------------------

/// The config file's text and its parsed content.
pub fn read_config(n: &TestNode) -> (String, Value) {
    let text = std::fs::read_to_string(&n.config).expect("config.yaml");
    let v: Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("config.yaml no longer parses: {e}\n{text}"));
    (text, v)
}

/// The lines of the node's log that contain `needle`.
pub fn log_lines(n: &TestNode, needle: &str) -> Vec<String> {
    n.log()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// ISO 8601 UTC text of epoch milliseconds ("2026-11-26T17:10:21.123Z").
pub fn iso(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The primary keys (as JSON text) of every record of `db.table` on a node; empty while the
/// table does not exist there.
pub fn ids_in(n: &TestNode, db: &str, table: &str) -> BTreeSet<String> {
    let (s, r) = n.op(
        json!({"operation":"search_by_value","database":db,"table":table,
        "attribute":"id","value":"*","get_attributes":["id"]}),
    );
    if s != 200 {
        return BTreeSet::new();
    }
    r.as_array()
        .map(|a| a.iter().map(|x| x["id"].to_string()).collect())
        .unwrap_or_default()
}
