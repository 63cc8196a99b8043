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
    ids_in(n, "data", table)
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
    // One (empty) copy per session; a loop would copy again every back-off (0.5 s and up).
    // One more is allowed: on a loaded box a 1 s ping interval can end a session honestly.
    let copies = || {
        log_lines(c, "full copy of data from")
            .iter()
            .filter(|l| l.contains(" done "))
            .count()
    };
    wait_for("C never finished its first copy", &[a, c], || copies() >= 1);
    let before = copies();
    assert!(
        holds_for(Duration::from_secs(3), || copies() <= before + 1),
        "C copied a database A does not have again and again:\n{}",
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
        // B's record reaches C through A although neither knows the other (relay, item 2).
        data_ids(&nodes[2], "dog") == ids(&["a1", "a2", "a3", "a4", "b1"])
            && data_ids(&nodes[1], "dog") == ids(&["a1", "a2", "a3", "a4", "b1"])
    });
    assert!(attributes(&nodes[2], "dog").is_superset(&a_attrs));
}

// ---------------------------------------------------------------------------------------------
// Item 6: operation forwarding (`replicated: true`) and drops that stay dropped
// ---------------------------------------------------------------------------------------------

/// The `replicated` entries of an answer by node.
fn replicated_by_node(answer: &Value) -> std::collections::BTreeMap<String, Value> {
    answer["replicated"]
        .as_array()
        .unwrap_or_else(|| panic!("no replicated array in {answer}"))
        .iter()
        .map(|e| {
            (
                e["node"].as_str().unwrap_or_default().to_string(),
                e.clone(),
            )
        })
        .collect()
}

#[test]
fn replicated_schema_operations_run_on_every_member_before_the_answer() {
    let ip = ips(SUITE, 3);
    let nodes = full_mesh_with_tables(&ip, &["bird"]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let ok = |n: &TestNode, msg: &str| json!({"message": msg, "node": n.ip});

    let msg = "table 'dev.cat' successfully created.";
    let r = a.ok(
        json!({"operation":"create_table","database":"dev","table":"cat",
        "primary_key":"id","replicated":true}),
    );
    assert_eq!(r["message"], msg);
    let by = replicated_by_node(&r);
    assert_eq!(by.len(), 2, "{r}");
    assert_eq!((&by[&b.ip], &by[&c.ip]), (&ok(b, msg), &ok(c, msg)));
    // Done on the members before the answer: no wait.
    assert!(has_table(b, "cat") && has_table(c, "cat"));

    let msg = "attribute 'dev.cat.colour' successfully created.";
    let r = a.ok(
        json!({"operation":"create_attribute","database":"dev","table":"cat",
        "attribute":"colour","replicated":true}),
    );
    assert_eq!(replicated_by_node(&r)[&c.ip], ok(c, msg), "{r}");
    let (_, d) = c.op(json!({"operation":"describe_table","database":"dev","table":"cat"}));
    assert!(
        d["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["attribute"] == "colour"),
        "{d}"
    );

    let msg = "successfully deleted table 'dev.cat'";
    let r =
        b.ok(json!({"operation":"drop_table","database":"dev","table":"cat","replicated":true}));
    assert_eq!(r["message"], msg);
    assert_eq!(replicated_by_node(&r)[&a.ip], ok(a, msg), "{r}");
    assert!(!has_table(a, "cat") && !has_table(c, "cat"));

    let msg = "successfully deleted 'dev'";
    let r = c.ok(json!({"operation":"drop_database","database":"dev","replicated":true}));
    assert_eq!(r["message"], msg);
    assert_eq!(replicated_by_node(&r)[&a.ip], ok(a, msg), "{r}");
    for n in [a, b] {
        assert_eq!(
            n.op(json!({"operation":"describe_database","database":"dev"}))
                .0,
            404
        );
    }
    // Without `replicated` a drop stays local (Harper's default).
    create_table(a, "fish");
    wait_table(&refs(&nodes), "fish");
    let r = a.ok(json!({"operation":"drop_table","database":"dev","table":"fish"}));
    assert_eq!(
        r,
        json!({"message": "successfully deleted table 'dev.fish'"})
    );
    assert!(has_table(b, "fish"));
}

/// `set_configuration` with `replicated: true` (issue 14 item 6) writes every member's config
/// file before the answer, which lists each member's own answer; without it, or when the
/// local change is refused, nothing is forwarded.
#[test]
fn replicated_set_configuration_writes_every_members_config_file() {
    let ip = ips(SUITE, 3);
    let nodes = full_mesh_with_tables(&ip, &["bird"]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let level =
        |n: &TestNode| n.ok(json!({"operation":"get_configuration"}))["logging"]["level"].clone();
    let before = level(b);
    assert_ne!(before, "trace");

    // Refused here: nothing reaches the members.
    let (s, r) =
        a.op(json!({"operation":"set_configuration","logging_level":"loud","replicated":true}));
    assert_eq!(s, 400, "{r}");
    assert!(r.get("replicated").is_none(), "{r}");
    assert_eq!(level(b), before);

    let r =
        a.ok(json!({"operation":"set_configuration","logging_level":"trace","replicated":true}));
    let by = replicated_by_node(&r);
    assert_eq!(by.len(), 2, "{r}");
    for n in [b, c] {
        let e = &by[&n.ip];
        assert_eq!(e["message"], "Configuration successfully set.", "{r}");
        assert_eq!(e["applied"], json!(["logging.level"]), "{r}");
        // Done before the answer, in the member's file and live.
        assert_eq!(level(n), "trace");
        let file = std::fs::read_to_string(&n.config).unwrap();
        assert!(file.contains("  level: trace\n"), "{file}");
    }
    assert_eq!(level(a), "trace");

    // Without `replicated` the change is this node's only (Harper's default).
    let r = b.ok(json!({"operation":"set_configuration","logging_level":"info"}));
    assert!(r.get("replicated").is_none(), "{r}");
    assert_eq!(
        (level(b), level(a), level(c)),
        (json!("info"), json!("trace"), json!("trace"))
    );
}

#[test]
fn a_dropped_table_stays_dropped_when_a_node_that_missed_the_drop_rejoins() {
    let ip = ips(SUITE, 3);
    let mut nodes = full_mesh_with_tables(&ip, &["dog"]);
    for n in &nodes {
        put(n, "dog", &format!("old-{}", n.ip));
    }
    for n in &nodes {
        wait_present(&refs(&nodes), "dog", &format!("old-{}", n.ip));
    }
    nodes[2].stop();
    let r = nodes[0]
        .ok(json!({"operation":"drop_table","database":"dev","table":"dog","replicated":true}));
    let by = replicated_by_node(&r);
    assert_eq!(
        by[&nodes[1].ip]["message"], "successfully deleted table 'dev.dog'",
        "{r}"
    );
    assert_eq!(by[&nodes[2].ip]["status"], "failed", "{r}");
    assert!(!has_table(&nodes[1], "dog"));

    // C comes back while A, whose log holds the drop, is down: it learns the drop from B.
    nodes[0].stop();
    nodes[2].start_again();
    wait_for(
        "C kept the table it missed the drop of",
        &refs(&nodes[1..]),
        || !has_table(&nodes[2], "dog"),
    );
    nodes[0].start_again();
    let all = refs(&nodes);
    wait_mesh(&all, &["system", "dev"]);
    assert!(
        holds_for(Duration::from_secs(3), || all
            .iter()
            .all(|n| !has_table(n, "dog"))),
        "the dropped table came back:\n{}",
        dump(&all)
    );

    // The same name can be created again, and none of the old records come with it.
    create_table(&nodes[0], "dog");
    wait_table(&all, "dog");
    put(&nodes[2], "dog", "new");
    wait_present(&all, "dog", "new");
    let want: BTreeSet<String> = ["\"new\"".to_string()].into();
    assert!(
        holds_for(Duration::from_secs(3), || all
            .iter()
            .all(|n| keys(n, "dog") == want)),
        "old records came back:\n{}",
        dump(&all)
    );
}

#[test]
fn records_a_node_wrote_before_a_drop_it_missed_do_not_bring_the_table_back() {
    let ip = ips(SUITE, 3);
    let mut nodes = full_mesh_with_tables(&ip, &["dog"]);
    // C writes while A and B are down: they see this record only after the drop.
    nodes[0].stop();
    nodes[1].stop();
    put(&nodes[2], "dog", "late");
    nodes[2].stop();
    nodes[0].start_again();
    nodes[1].start_again();
    wait_link(&nodes[0], &nodes[1].ip, &["system", "dev"]);
    let r = nodes[0]
        .ok(json!({"operation":"drop_table","database":"dev","table":"dog","replicated":true}));
    assert_eq!(
        replicated_by_node(&r)[&nodes[2].ip]["status"],
        "failed",
        "{r}"
    );
    nodes[2].start_again();
    let all = refs(&nodes);
    wait_mesh(&all, &["system", "dev"]);
    wait_for("C kept the table it missed the drop of", &all, || {
        !has_table(&nodes[2], "dog")
    });
    assert!(
        holds_for(Duration::from_secs(3), || all
            .iter()
            .all(|n| !has_table(n, "dog"))),
        "C's record made before the drop brought the table back:\n{}",
        dump(&all)
    );
}
