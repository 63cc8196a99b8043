//! Issue 14 items 1 and 6 against real `skerry` processes (suite 37): databases listed in
//! `replication.databases` are pulled from every peer even when this node does not have them
//! (no `system` stream tells it about them), their schema travels with them additively, and
//! schema operations with `replicated: true` run on every member; a dropped table stays dropped
//! when a node that missed the drop comes back.
//!
//! Every wait is bounded; `holds_for` windows only check that something does *not* happen.

mod common;
use common::cluster::*;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const SUITE: u8 = 37;

/// A replicating node that replicates only the `data` database (not `system`).
fn yaml_data_only(ip: &str) -> String {
    format!("{}  databases:\n    - data\n", repl_yaml(ip))
}

fn describe(n: &TestNode, table: &str) -> (u16, Value) {
    n.op(json!({"operation":"describe_table","database":"data","table":table}))
}

fn attributes(n: &TestNode, table: &str) -> BTreeSet<String> {
    let (s, r) = describe(n, table);
    if s != 200 {
        return BTreeSet::new();
    }
    r["attributes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["attribute"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn data_ids(n: &TestNode, table: &str) -> BTreeSet<String> {
    let (s, r) = n.op(
        json!({"operation":"search_by_value","database":"data","table":table,
        "attribute":"id","value":"*","get_attributes":["id"]}),
    );
    if s != 200 {
        return BTreeSet::new();
    }
    r.as_array()
        .map(|a| a.iter().map(|x| x["id"].to_string()).collect())
        .unwrap_or_default()
}

fn insert_data(n: &TestNode, table: &str, recs: Value) {
    let len = recs.as_array().map_or(0, Vec::len);
    let r = n.ok(json!({"operation":"insert","database":"data","table":table,"records":recs}));
    assert_eq!(r["message"], format!("inserted {len} of {len} records"));
}

fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| format!("\"{s}\"")).collect()
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn wait_for(what: &str, nodes: &[&TestNode], mut f: impl FnMut() -> bool) {
    assert!(wait_until(T, &mut f), "{what}:\n{}", dump(nodes));
}

// ---------------------------------------------------------------------------------------------
// Item 1: a database only the peer has
// ---------------------------------------------------------------------------------------------

#[test]
fn a_database_only_on_the_peer_replicates_with_its_schema_when_system_is_not_replicated() {
    let ip = ips(SUITE, 3);
    let mut nodes = start_all_with(&ip, yaml_data_only);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    // Neither A nor C has `data`: the link is up and quiet (no copy restarted in a loop).
    add_node(a, &c.ip);
    wait_link(c, &a.ip, &["data"]);
    wait_link(a, &c.ip, &["data"]);
    let copies = || log_lines(c, "full copy of data from").len();
    let before = copies();
    assert!(
        holds_for(Duration::from_secs(3), || copies() == before),
        "C restarted a copy of a database A does not have:\n{}",
        c.log()
    );
    assert_eq!(
        c.op(json!({"operation":"describe_database","database":"data"}))
            .0,
        404
    );

    // Only A creates the table, with an attribute no record carries, and writes.
    a.ok(json!({"operation":"create_table","database":"data","table":"dog","primary_key":"id"}));
    a.ok(json!({"operation":"create_attribute","database":"data","table":"dog","attribute":"a_extra"}));
    insert_data(
        a,
        "dog",
        json!([{"id":"a1","name":"one"},{"id":"a2","name":"two"}]),
    );
    let all = [a, b, c];
    wait_for("C did not get data.dog with A's records", &all, || {
        data_ids(c, "dog") == ids(&["a1", "a2"])
    });
    let a_attrs = set(&[
        "id",
        "__createdtime__",
        "__updatedtime__",
        "name",
        "a_extra",
    ]);
    assert!(
        attributes(c, "dog").is_superset(&a_attrs),
        "{:?}",
        attributes(c, "dog")
    );

    // B has its own data.dog with an attribute only it knows and one record of its own; once
    // linked (a star around A: with `system` not replicated, B and C never learn of each
    // other), B keeps its attribute and record and gets A's, and A gets B's.
    b.ok(json!({"operation":"create_table","database":"data","table":"dog","primary_key":"id"}));
    b.ok(json!({"operation":"create_attribute","database":"data","table":"dog","attribute":"b_only"}));
    insert_data(b, "dog", json!([{"id":"b1","name":"from b"}]));
    add_node(a, &b.ip);
    wait_for("A and B did not merge data.dog", &all, || {
        data_ids(b, "dog") == ids(&["a1", "a2", "b1"])
            && data_ids(a, "dog") == ids(&["a1", "a2", "b1"])
    });
    let mut both = a_attrs.clone();
    both.insert("b_only".into());
    wait_for("the schemas did not merge additively", &all, || {
        attributes(b, "dog").is_superset(&both) && attributes(a, "dog").is_superset(&both)
    });

    // A restarted node still converges, and so does one that missed writes while down.
    nodes[2].stop();
    insert_data(&nodes[0], "dog", json!([{"id":"a3"}]));
    nodes[2].start_again();
    nodes[0].restart();
    insert_data(&nodes[0], "dog", json!([{"id":"a4"}]));
    let all = refs(&nodes);
    wait_for("restarted nodes did not converge", &all, || {
        data_ids(&nodes[2], "dog") == ids(&["a1", "a2", "a3", "a4"])
            && data_ids(&nodes[1], "dog") == ids(&["a1", "a2", "a3", "a4", "b1"])
    });
    assert!(attributes(&nodes[2], "dog").is_superset(&a_attrs));
}
