//! Full copy and start_time between real `skerry` processes (suite 42): a late joiner receives
//! 30,000 existing records; a joiner killed again and again in the middle of its copy resumes
//! and ends with exactly the source's key set; a node away past the audit-retention horizon
//! gets a full copy that keeps its own rows and the others' deletes; `start_time` on add_node
//! limits what a fresh node receives of a user database, never of `system`.
//!
//! Every wait is bounded; `holds_for` windows only check that something does *not* happen.

mod common;
use common::cluster::*;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const SUITE: u8 = 42;

/// Bound for a copy of 30,000 records on a busy 2-core machine (debug build).
const COPY: Duration = Duration::from_secs(90);

/// Starts `ips` (in parallel), adds the others from the first and creates dev.dog on the first
/// once the mesh is up.
fn mesh_with_dog(ips: &[String], yaml: impl Fn(&str) -> String + Sync) -> Vec<TestNode> {
    let nodes = start_all_with(ips, yaml);
    for n in &nodes[1..] {
        add_node(&nodes[0], &n.ip);
    }
    let all = refs(&nodes);
    wait_mesh(&all, &["system"]);
    create_table(&nodes[0], "dog");
    wait_table(&all, "dog");
    wait_mesh(&all, &["system", "dev"]);
    nodes
}

/// Inserts `total` records of about 300 bytes (ids 0..total) in batches of 1,000, round-robin
/// over `writers`.
fn insert_padded(writers: &[&TestNode], total: usize) {
    let pad = "x".repeat(200);
    for (b, start) in (0..total).step_by(1000).enumerate() {
        let w = writers[b % writers.len()];
        let recs: Vec<Value> = (start..(start + 1000).min(total))
            .map(|i| json!({"id": i, "name": format!("dog-{i}"), "batch": b, "pad": pad}))
            .collect();
        insert(w, "dog", Value::Array(recs));
    }
}

/// Waits until `n` holds exactly `want` as the keys of dev.dog.
fn wait_keys(n: &TestNode, want: &BTreeSet<String>, timeout: Duration, others: &[&TestNode]) {
    let mut last = String::new();
    let ok = wait_until(timeout, || {
        if record_count(n, "dog") != Some(want.len() as u64) {
            last = format!("record_count {:?}", record_count(n, "dog"));
            return false;
        }
        let got = keys(n, "dog");
        if &got != want {
            last = key_diff(want, &got);
            return false;
        }
        true
    });
    assert!(
        ok,
        "{} does not hold the source's key set: {last}\n{}\n--- log of {} ---\n{}",
        n.ip,
        dump(others),
        n.ip,
        n.log()
    );
}

#[test]
fn late_joiner_receives_30000_existing_records_with_the_exact_key_set() {
    let ip = ips(SUITE, 3);
    let nodes = mesh_with_dog(&ip[..2], repl_yaml);
    let (a, b) = (&nodes[0], &nodes[1]);
    insert_batches(&[a, b], "dog", 30_000, 1000);
    let src: BTreeSet<String> = (0..30_000).map(|i| json!(i).to_string()).collect();
    wait_keys(a, &src, COPY, &[a, b]);
    wait_keys(b, &src, COPY, &[a, b]);

    let c = start_repl(&ip[2]);
    add_node(a, &c.ip);
    wait_keys(&c, &src, COPY, &[a, b, &c]);
    // Same records (values and timestamps), not just the same keys.
    let (ra, rc) = (records(a, "dog"), records(&c, "dog"));
    assert!(ra == rc, "{}", diff(&a.ip, &ra, &c.ip, &rc));
    let done = log_lines(&c, "full copy of dev from");
    assert!(
        done.iter().any(|l| l.contains("done (30000 records)")),
        "no complete copy of dev in C's log: {done:?}"
    );
    // And it streams afterwards.
    put(b, "dog", "after-join");
    wait_present(&[&c], "dog", "after-join");
    wait_mesh(&[a, b, &c], &["system", "dev"]);
}

/// Kills the joiner `c` three times while it copies dev from `sources` (each time once the
/// current attempt has committed more than a round-dependent number of records), lets it
/// finish, and checks the key set and that every attempt after the first resumed.
fn kill_mid_copy_three_times(sources: &[&TestNode], c: &mut TestNode, total: usize) {
    let src: BTreeSet<String> = (0..total).map(|i| json!(i).to_string()).collect();
    let mut committed_before_kills = 0u64;
    let mut saw_sender_copying = false;
    for (round, at_least) in [1u64, 1500, 3000].into_iter().enumerate() {
        // A copy in progress on the receiver: some records committed, not all.
        let mut n = 0;
        let ok = wait_until(T, || {
            if !saw_sender_copying {
                saw_sender_copying = sources.iter().any(|s| {
                    let st = status(s);
                    socket(&st, &c.ip, "dev").is_some_and(|s| {
                        s["sendingMessage"] == "Copying" && s["copy"]["direction"] == "sending"
                    })
                });
            }
            let st = status(c);
            sources.iter().any(|s| {
                match socket(&st, &s.ip, "dev").and_then(|x| x.get("copy").cloned()) {
                    Some(cp) if cp["direction"] == "receiving" => {
                        n = cp["records"].as_u64().unwrap_or(0);
                        n >= at_least && n < total as u64
                    }
                    _ => false,
                }
            })
        });
        let mut all: Vec<&TestNode> = sources.to_vec();
        all.push(c);
        assert!(
            ok,
            "round {round}: no copy in progress (>= {at_least} records) seen on the joiner:\n{}\n--- joiner log ---\n{}",
            dump(&all),
            c.log()
        );
        c.kill9();
        committed_before_kills += n;
        c.start_again();
    }
    assert!(
        saw_sender_copying,
        "the sender's cluster_status never showed sendingMessage \"Copying\" with copy.direction \"sending\""
    );
    let mut all: Vec<&TestNode> = sources.to_vec();
    all.push(c);
    wait_keys(c, &src, COPY, &all);

    // Resumed, not restarted: every attempt after the first starts after a table, and the last
    // attempt received at most what the killed ones had not committed.
    let starts: Vec<String> = log_lines(c, "full copy of dev from")
        .into_iter()
        .filter(|l| l.contains("resuming after"))
        .collect();
    assert!(starts.len() >= 4, "{starts:#?}");
    assert!(
        starts[0].contains("(resuming after table '')"),
        "{starts:#?}"
    );
    for l in &starts[1..] {
        assert!(
            l.contains("(resuming after table 'dog')"),
            "an attempt after a kill started from the beginning: {l}\nall attempts: {starts:#?}"
        );
    }
    let last: u64 = log_lines(c, "full copy of dev from")
        .iter()
        .filter_map(|l| l.split(" done (").nth(1))
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .next_back()
        .expect("no finished copy in the joiner's log");
    assert!(
        last <= total as u64 - committed_before_kills,
        "the last attempt received {last} records although {committed_before_kills} were committed before the kills"
    );
    // Streaming follows the copy.
    put(sources[0], "dog", "after-copy");
    wait_present(&[c], "dog", "after-copy");
    assert_eq!(record_count(c, "dog"), Some(total as u64 + 1));
}

#[test]
fn late_joiner_killed_mid_copy_again_and_again_resumes_and_ends_with_the_exact_key_set() {
    const TOTAL: usize = 30_000;
    let ip = ips(SUITE, 2);
    let a = start_repl(&ip[0]);
    create_table(&a, "dog");
    insert_padded(&[&a], TOTAL);
    let mut c = TestNode::start_with_env(
        &ip[1],
        &repl_yaml(&ip[1]),
        &[("SKERRY_TEST_COPY_DELAY_MS", "150")],
    );
    add_node(&a, &c.ip);
    kill_mid_copy_three_times(&[&a], &mut c, TOTAL);
}

#[test]
fn late_joiner_with_two_sources_killed_mid_copy_resumes_instead_of_starting_over() {
    const TOTAL: usize = 20_000;
    let ip = ips(SUITE, 3);
    let nodes = mesh_with_dog(&ip[..2], repl_yaml);
    let (a, b) = (&nodes[0], &nodes[1]);
    insert_padded(&[a, b], TOTAL);
    let src: BTreeSet<String> = (0..TOTAL).map(|i| json!(i).to_string()).collect();
    wait_keys(a, &src, COPY, &[a, b]);
    wait_keys(b, &src, COPY, &[a, b]);
    let mut c = TestNode::start_with_env(
        &ip[2],
        &repl_yaml(&ip[2]),
        &[("SKERRY_TEST_COPY_DELAY_MS", "150")],
    );
    add_node(a, &c.ip);
    kill_mid_copy_three_times(&[a, b], &mut c, TOTAL);
}

#[test]
fn node_away_past_the_retention_horizon_gets_a_full_copy_keeps_its_own_rows_and_the_deletes() {
    let ip = ips(SUITE, 3);
    let mut nodes = mesh_with_dog(&ip, |ip| repl_yaml_retention(ip, "3s"));
    let recs: Vec<Value> = (0..100)
        .map(|i| json!({"id": i, "name": format!("dog-{i}")}))
        .collect();
    insert(&nodes[0], "dog", Value::Array(recs));
    wait_converged(&refs(&nodes), "dog", Some(100), T);

    // C goes away; the others write, update and delete.
    nodes[2].stop();
    {
        let (a, b) = (&nodes[0], &nodes[1]);
        let away_a: Vec<Value> = (0..20)
            .map(|i| json!({"id": format!("away-a-{i}")}))
            .collect();
        let away_b: Vec<Value> = (0..20)
            .map(|i| json!({"id": format!("away-b-{i}")}))
            .collect();
        insert(a, "dog", Value::Array(away_a));
        insert(b, "dog", Value::Array(away_b));
        delete(a, "dog", json!((0..10).collect::<Vec<_>>()));
        b.ok(json!({"operation":"update","database":"dev","table":"dog",
            "records":[{"id":50,"name":"changed-away"}]}));
        wait_converged(&[a, b], "dog", Some(130), T);
        // Past the horizon: both logs have pruned everything written while C was away.
        let ok = wait_until(T, || {
            audit_log(a, "dog").is_empty() && audit_log(b, "dog").is_empty()
        });
        assert!(
            ok,
            "audit logs not pruned after 3s retention: A {} entries, B {} entries",
            audit_log(a, "dog").len(),
            audit_log(b, "dog").len()
        );
    }
    // C comes back alone and writes while it cannot reach anyone.
    nodes[0].stop();
    nodes[1].stop();
    nodes[2].start_again();
    {
        let c = &nodes[2];
        let own: Vec<Value> = (0..10)
            .map(|i| json!({"id": format!("c-own-{i}")}))
            .collect();
        insert(c, "dog", Value::Array(own));
        c.ok(json!({"operation":"update","database":"dev","table":"dog",
            "records":[{"id":60,"name":"c-changed"}]}));
    }
    nodes[0].start_again();
    nodes[1].start_again();
    let all = refs(&nodes);
    let (a, b, c) = (all[0], all[1], all[2]);
    wait_mesh(&all, &["system", "dev"]);
    let recs = wait_converged(&all, "dog", Some(140), COPY);
    for i in 0..10 {
        assert!(
            !recs.contains_key(&json!(i).to_string()),
            "deleted {i} is back"
        );
    }
    for i in 0..10 {
        assert!(recs.contains_key(&json!(format!("c-own-{i}")).to_string()));
    }
    for i in 0..20 {
        assert!(recs.contains_key(&json!(format!("away-a-{i}")).to_string()));
        assert!(recs.contains_key(&json!(format!("away-b-{i}")).to_string()));
    }
    assert_eq!(recs[&json!(50).to_string()]["name"], "changed-away");
    assert_eq!(recs[&json!(60).to_string()]["name"], "c-changed");
    // It was a full copy (NeedCopy), not a replay of a log that no longer exists.
    let needed = log_lines(c, "no longer has");
    assert!(
        !needed.is_empty(),
        "C's log shows no NeedCopy:\n{}",
        c.log()
    );
    put(c, "dog", "c-after");
    put(a, "dog", "a-after");
    wait_present(&[a, b], "dog", "c-after");
    wait_present(&[b, c], "dog", "a-after");
    // The rows C took by full copy count in its table digest like replicated ones: the
    // digests agree and cluster_verify finds nothing that differs.
    let digest = |n: &TestNode| {
        n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}))["digest"].clone()
    };
    let mut seen = Vec::new();
    let agreed = wait_until(T, || {
        seen = all.iter().map(|n| digest(n)).collect();
        seen[0].is_string() && seen.iter().all(|d| *d == seen[0])
    });
    assert!(agreed, "digests after the full copy differ: {seen:?}");
    let v = c.ok(json!({"operation":"cluster_verify","database":"dev"}));
    assert_eq!(v["match"], true, "{v}");
}

#[test]
fn add_node_with_a_past_start_time_sends_only_later_user_writes_but_the_whole_system_database() {
    let ip = ips(SUITE, 3);
    let a = start_repl(&ip[0]);
    create_table(&a, "dog");
    add_plain_user(&a, "early_user");
    let before: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("before-{i}")}))
        .collect();
    insert(&a, "dog", Value::Array(before));
    let t = now_ms();
    assert!(wait_until(T, || now_ms() > t + 20));
    let after: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("after-{i}")}))
        .collect();
    insert(&a, "dog", Value::Array(after));

    let b = start_repl(&ip[1]);
    add_node_with(&a, &b.ip, json!({"start_time": iso(t)}));
    let want: BTreeSet<String> = (0..10)
        .map(|i| json!(format!("after-{i}")).to_string())
        .collect();
    wait_keys(&b, &want, T, &[&a, &b]);
    assert!(
        holds_for(Duration::from_secs(1), || !has(&b, "dog", "before-0")),
        "a write from before start_time arrived"
    );
    // system whole: the user and role made before start_time are there.
    assert!(
        wait_until(T, || user_names(&b).contains("early_user")),
        "users made before start_time are missing on B: {:?}",
        user_names(&b)
    );
    assert!(role_names(&b).contains("early_user_role"));
    put(&a, "dog", "later");
    wait_present(&[&b], "dog", "later");

    // A third, fresh node added without start_time gets everything: B's start_time is about
    // B's link with A only.
    let d = start_repl(&ip[2]);
    add_node(&a, &d.ip);
    let all = keys(&a, "dog");
    assert_eq!(all.len(), 21);
    wait_keys(&d, &all, T, &[&a, &b, &d]);
}

#[test]
fn add_node_with_a_future_start_time_sends_nothing_older_than_that_time() {
    let ip = ips(SUITE, 2);
    let a = start_repl(&ip[0]);
    create_table(&a, "dog");
    add_plain_user(&a, "early_user");
    put(&a, "dog", "before");
    let mut b = start_repl(&ip[1]);
    let t = now_ms() + 4000;
    add_node_with(&a, &b.ip, json!({ "start_time": t }));
    put(&a, "dog", "after-add-before-start");
    assert!(
        wait_until(T, || user_names(&b).contains("early_user")),
        "system is not whole on B: {:?}",
        user_names(&b)
    );
    // Once both hold the same membership rows, a restart of the new node before that time
    // changes nothing.
    let nodes_of = |n: &TestNode| {
        n.ok(
            json!({"operation":"search_by_value","database":"system","table":"hdb_nodes",
            "attribute":"name","value":"*","get_attributes":["*"]}),
        )
    };
    assert!(
        wait_until(T, || nodes_of(&a) == nodes_of(&b)),
        "system.hdb_nodes differs: A {} B {}",
        nodes_of(&a),
        nodes_of(&b)
    );
    b.restart();
    let b = b;
    assert!(wait_until(T, || now_ms() > t + 20));
    put(&a, "dog", "after-start");
    wait_present(&[&b], "dog", "after-start");
    assert!(
        holds_for(Duration::from_secs(1), || !has(&b, "dog", "before")
            && !has(&b, "dog", "after-add-before-start")),
        "a write from before start_time arrived: {:?}",
        keys(&b, "dog")
    );
    assert_eq!(
        keys(&b, "dog"),
        [json!("after-start").to_string()].into_iter().collect()
    );
}
