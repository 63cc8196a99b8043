//! Table digests and `cluster_verify` against real `skerry` processes (suite 35, issue 9
//! item 5): nodes that converged show equal digests in `describe_table`, `digest_match: true`
//! in `cluster_status` and an all-matching `cluster_verify`; a node whose link filters a table
//! diverges, and `cluster_verify` names exactly the keys that differ (inserted, overwritten
//! and deleted on one side only).
//!
//! Every wait is bounded; `holds_for` windows only check that something does *not* happen.

mod common;
use common::cluster::*;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const SUITE: u8 = 35;

fn digest_of(n: &TestNode, table: &str) -> Option<String> {
    let (s, r) = n.op(json!({"operation":"describe_table","database":"dev","table":table}));
    (s == 200).then(|| r["digest"].as_str().map(str::to_string))?
}

fn verify(n: &TestNode, extra: Value) -> Value {
    let mut body = json!({"operation":"cluster_verify"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    n.ok(body)
}

/// The entry of (peer, table) in a cluster_verify answer.
fn table_entry<'a>(v: &'a Value, peer: &str, db: &str, table: &str) -> Option<&'a Value> {
    v["peers"].as_array()?.iter().find(|p| p["name"] == peer)?["tables"]
        .as_array()?
        .iter()
        .find(|t| t["database"] == db && t["table"] == table)
}

/// Waits until every node shows the same digest of dev.`table` and returns it.
fn wait_equal_digests(nodes: &[&TestNode], table: &str) -> String {
    let mut seen = Vec::new();
    let ok = wait_until(T, || {
        seen = nodes.iter().map(|n| digest_of(n, table)).collect();
        seen[0].is_some() && seen.iter().all(|d| *d == seen[0])
    });
    assert!(
        ok,
        "digests of dev.{table} never agreed: {seen:?}\n{}",
        dump(nodes)
    );
    seen[0].clone().unwrap()
}

/// Every table entry of every peer in a cluster_verify answer, as "db.table" → entry.
fn all_tables(v: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for p in v["peers"].as_array().unwrap() {
        for t in p["tables"].as_array().unwrap() {
            out.push((
                p["name"].as_str().unwrap().to_string(),
                format!(
                    "{}.{}",
                    t["database"].as_str().unwrap(),
                    t["table"].as_str().unwrap()
                ),
                t.clone(),
            ));
        }
    }
    out
}

/// `digest_match` of (peer, database) in `n`'s cluster_status.
fn digest_match(n: &TestNode, peer: &str, db: &str) -> Value {
    socket(&status(n), peer, db).map_or(Value::Null, |s| s["digest_match"].clone())
}

#[test]
fn converged_nodes_show_different_digests_or_cluster_verify_reports_a_mismatch() {
    let ip = ips(SUITE, 3);
    let nodes = full_mesh_with_tables(&ip, &["dog"]);
    let all = refs(&nodes);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let empty = wait_equal_digests(&all, "dog");
    assert_eq!(empty, "0".repeat(32), "an empty table digests as zero");
    // Writes from every node, then overwrites and deletes of other nodes' records.
    insert(
        a,
        "dog",
        json!([{"id": "a1", "n": 1}, {"id": "a2"}, {"id": "a3"}]),
    );
    insert(b, "dog", json!([{"id": "b1"}, {"id": "b2"}]));
    insert(c, "dog", json!([{"id": "c1"}]));
    wait_converged(&all, "dog", Some(6), T);
    b.ok(
        json!({"operation":"update","database":"dev","table":"dog","records":[{"id":"a1","n":2}]}),
    );
    delete(c, "dog", json!(["a2"]));
    delete(a, "dog", json!(["b2"]));
    let recs = wait_converged(&all, "dog", Some(4), T);
    assert_eq!(recs["\"a1\""]["n"], 2);
    let d = wait_equal_digests(&all, "dog");
    assert_ne!(d, empty);
    for n in &all {
        let v = verify(n, json!({}));
        let tables = all_tables(&v);
        assert_eq!(v["node"], n.ip.as_str());
        assert_eq!(v["peers"].as_array().unwrap().len(), 2, "{v}");
        assert!(
            tables.iter().any(|(_, t, _)| t == "dev.dog"),
            "dev.dog not compared: {v}"
        );
        for (peer, t, e) in &tables {
            assert_eq!(
                (
                    e["match"].clone(),
                    e["differing_keys"].clone(),
                    e["truncated"].clone()
                ),
                (json!(true), json!([]), json!(false)),
                "{} vs {peer}: {t} differs: {e}",
                n.ip
            );
        }
        assert_eq!(v["match"], true, "{v}");
        // The answer narrowed to one table.
        let one = verify(n, json!({"database": "dev", "table": "dog"}));
        assert_eq!(all_tables(&one).len(), 2, "{one}");
        assert_eq!(
            table_entry(&one, &a.ip, "dev", "dog").is_some(),
            n.ip != a.ip
        );
    }
    for n in &all {
        for p in &all {
            if n.ip == p.ip {
                continue;
            }
            assert!(
                wait_until(Duration::from_secs(15), || digest_match(n, &p.ip, "dev")
                    == true),
                "cluster_status on {} never showed digest_match with {}: {}",
                n.ip,
                p.ip,
                status(n)
            );
        }
    }
    // Deleting every record brings every node back to the empty table's digest: a delete
    // that left its record's contribution in (on every node alike, so no comparison between
    // nodes would notice) shows here.
    delete(b, "dog", json!(["a1", "a3", "b1", "c1"]));
    wait_converged(&all, "dog", Some(0), T);
    assert_eq!(wait_equal_digests(&all, "dog"), empty);
}

#[test]
fn divergent_keys_of_a_table_a_link_policy_keeps_local_go_unreported_by_cluster_verify() {
    let ip = ips(SUITE, 2);
    let nodes = full_mesh_with_tables(&ip, &["dog", "cat"]);
    let all = refs(&nodes);
    let (a, b) = (&nodes[0], &nodes[1]);
    insert(
        a,
        "cat",
        json!([{"id": "s1", "v": 1}, {"id": "s2"}, {"id": "s3"}]),
    );
    wait_converged(&all, "cat", Some(3), T);
    wait_equal_digests(&all, "cat");
    // A's link with B carries only dog from now on: cat stays local on both sides.
    assert_eq!(
        a.ok(
            json!({"operation":"update_node","hostname":b.ip,"subscriptions":[
            {"database":"dev","table":"dog","subscribe":true,"publish":true}]})
        ),
        json!({"message": format!("Successfully updated '{}'", b.ip)})
    );
    insert(a, "cat", json!([{"id": "only-a"}]));
    a.ok(
        json!({"operation":"update","database":"dev","table":"cat","records":[{"id":"s1","v":2}]}),
    );
    delete(a, "cat", json!(["s2"]));
    // Positive control: dog still flows, and after it has, cat's writes have not.
    put(a, "dog", "d1");
    wait_present(&all, "dog", "d1");
    assert!(!has(b, "cat", "only-a"), "the filtered write reached B");

    let v = verify(a, json!({"database": "dev"}));
    assert_eq!(v["match"], false, "{v}");
    let dog = table_entry(&v, &b.ip, "dev", "dog").expect("dog compared");
    assert_eq!(dog["match"], true, "{v}");
    let cat = table_entry(&v, &b.ip, "dev", "cat").expect("cat compared");
    assert_eq!(cat["match"], false, "{v}");
    assert_eq!(cat["truncated"], false, "{v}");
    let diff: BTreeMap<String, (Value, Value)> = cat["differing_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_string(),
                (k["local"].clone(), k["peer"].clone()),
            )
        })
        .collect();
    assert_eq!(
        diff.keys().cloned().collect::<Vec<_>>(),
        ["only-a", "s1", "s2"],
        "exactly the inserted, overwritten and deleted keys differ: {v}"
    );
    let (local, peer) = &diff["only-a"];
    assert!(local["origin"] == a.ip.as_str() && peer.is_null(), "{v}");
    let (local, peer) = &diff["s1"];
    assert!(
        local["version"].as_u64().unwrap() > peer["version"].as_u64().unwrap(),
        "A's overwrite is newer than B's record: {v}"
    );
    let (local, peer) = &diff["s2"];
    assert!(
        local.is_null() && peer["origin"] == a.ip.as_str(),
        "deleted on A only: {v}"
    );

    // B sees the same three keys from its side.
    let from_b = verify(b, json!({"database": "dev", "table": "cat"}));
    let cat_b = table_entry(&from_b, &a.ip, "dev", "cat").expect("cat compared on B");
    let mut ids: Vec<&str> = cat_b["differing_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["only-a", "s1", "s2"], "{from_b}");
    assert_eq!(
        all_tables(&from_b).len(),
        1,
        "only the table asked for: {from_b}"
    );

    assert!(
        wait_until(Duration::from_secs(15), || digest_match(a, &b.ip, "dev")
            == false),
        "cluster_status never showed the divergence: {}",
        status(a)
    );
    assert_ne!(digest_of(a, "cat"), digest_of(b, "cat"));
    assert_eq!(digest_of(a, "dog"), digest_of(b, "dog"));
}

#[test]
fn cluster_verify_of_a_missing_database_or_by_a_non_super_user_is_refused() {
    let ip = ips(SUITE, 1);
    let a = start_repl(&ip[0]);
    let (s, r) = a.op(json!({"operation":"cluster_verify","database":"nope"}));
    assert_eq!(
        (s, r),
        (404, json!({"error": "database 'nope' does not exist"}))
    );
    add_plain_user(&a, "plain");
    let (s, r) = a.op_as("plain", "pw", json!({"operation":"cluster_verify"}));
    assert_eq!(s, 403, "{r}");
    assert_eq!(
        r["unauthorized_access"],
        json!(["Operation 'clusterVerify' is restricted to 'super_user' roles"])
    );
    // A node alone: nothing to compare, nothing differs.
    assert_eq!(
        a.ok(json!({"operation":"cluster_verify"})),
        json!({"node": ip[0], "match": true, "peers": []})
    );
}

/// A member that accepts connections and never answers (a hung process): cluster_status must
/// not wait for its digests beyond about a second, and shows `digest_match: null` for it;
/// cluster_verify reports it as an error instead of a match.
#[test]
fn a_hung_peer_holds_cluster_status_or_passes_for_matching() {
    let ip = ips(SUITE, 2);
    let a = start_repl(&ip[0]);
    let hung = std::net::TcpListener::bind(format!("{}:9933", ip[1])).unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for s in hung.incoming().flatten() {
                held.lock().unwrap().push(s);
            }
        });
    }
    // Registration fails (the peer never answers) but the node is a member.
    let (s, r) = a.op(json!({"operation":"add_node","hostname":ip[1],"authorization":creds()}));
    assert_eq!(s, 200, "{r}");
    // Long enough for refreshes to start, hang and be retried after the cache expires: no
    // cluster_status call may wait on them for much more than a second.
    let mut slowest = Duration::ZERO;
    let mut last = Value::Null;
    let fast = holds_for(Duration::from_secs(10), || {
        let t0 = std::time::Instant::now();
        last = status(&a);
        slowest = slowest.max(t0.elapsed());
        slowest < Duration::from_millis(2_500)
    });
    assert!(fast, "cluster_status took {slowest:?} with a hung peer");
    assert!(
        slowest >= Duration::from_millis(500),
        "no refresh was ever waited for ({slowest:?}): the test exercised nothing"
    );
    assert_eq!(
        socket(&last, &ip[1], "system").map(|s| s["digest_match"].clone()),
        Some(Value::Null),
        "{last}"
    );
    let v = verify(&a, json!({}));
    assert_eq!(v["match"], false, "{v}");
    let peer = &v["peers"][0];
    assert_eq!(peer["name"], ip[1].as_str(), "{v}");
    assert!(peer["error"].is_string(), "{v}");
    drop(held);
}
