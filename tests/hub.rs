//! Issue 14 item 2 against real `skerry` processes (suite 46): forwarding through a hub or a
//! chain when membership is not shared. Every node replicates only `data` (`system`, and with
//! it `hdb_nodes`, does not spread), and each knows only its neighbours by a route: a leaf of a
//! star never hears of the other leaf, yet must get its writes through the hub, also when the
//! hub is killed and started again while the leaves write; a chain converges end to end. Every
//! count is exact (no record lost, none applied twice) and the table digests agree.
//!
//! Every wait is bounded.

mod common;
use common::cluster::*;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const SUITE: u8 = 46;

/// A node replicating only `data` that dials (and accepts) exactly `routes`.
fn yaml(ip: &str, routes: &[&String]) -> String {
    let mut y = format!("{}  databases:\n    - data\n  routes:\n", repl_yaml(ip));
    for r in routes {
        y.push_str(&format!("    - {r}\n"));
    }
    y
}

fn describe(n: &TestNode) -> Option<Value> {
    let (s, r) = n.op(json!({"operation":"describe_table","database":"data","table":"dog"}));
    (s == 200).then_some(r)
}

fn count(n: &TestNode) -> Option<u64> {
    describe(n).and_then(|r| r["record_count"].as_u64())
}

fn digest(n: &TestNode) -> Option<String> {
    describe(n).and_then(|r| r["digest"].as_str().map(str::to_string))
}

/// The node's audit entries of data.dog, and how many of them repeat an earlier entry's
/// transaction (same time and keys: a relayed duplicate applied again).
fn audit_entries(n: &TestNode) -> (usize, usize) {
    let r = n.ok(json!({"operation":"read_audit_log","database":"data","table":"dog"}));
    let entries = r.as_array().cloned().unwrap_or_default();
    let mut seen = BTreeSet::new();
    let repeated = entries
        .iter()
        .filter(|e| !seen.insert((e["timestamp"].to_string(), e["hash_values"].to_string())))
        .count();
    (entries.len(), repeated)
}

fn ids(n: &TestNode) -> BTreeSet<String> {
    ids_in(n, "data", "dog")
}

fn insert_ids(n: &TestNode, ids: &[String]) {
    let recs: Vec<Value> = ids.iter().map(|i| json!({"id": i, "by": n.ip})).collect();
    let r = n.ok(json!({"operation":"insert","database":"data","table":"dog","records":recs}));
    assert_eq!(
        r["message"],
        format!("inserted {} of {} records", ids.len(), ids.len())
    );
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// Creates data.dog on `on` and waits until every node has it.
fn create_dog(on: &TestNode, nodes: &[&TestNode]) {
    on.ok(json!({"operation":"create_table","database":"data","table":"dog","primary_key":"id"}));
    assert!(
        wait_until(T, || nodes.iter().all(|n| describe(n).is_some())),
        "data.dog did not reach every node:\n{}",
        dump(nodes)
    );
}

/// Waits until every node holds exactly `expect` records of data.dog, the same ids, and the
/// same digest.
fn wait_converged_exactly(nodes: &[&TestNode], expect: usize, timeout: Duration) {
    let mut last = String::new();
    let ok = wait_until(timeout, || {
        let counts: Vec<_> = nodes.iter().map(|n| count(n)).collect();
        if counts.iter().any(|c| *c != Some(expect as u64)) {
            last = format!("record counts {counts:?}, expected {expect}");
            return false;
        }
        let first = ids(nodes[0]);
        if first.len() != expect || nodes[1..].iter().any(|n| ids(n) != first) {
            last = "same counts, different ids".into();
            return false;
        }
        let digests: Vec<_> = nodes.iter().map(|n| digest(n)).collect();
        if digests.iter().any(|d| d.is_none() || *d != digests[0]) {
            last = format!("digests differ: {digests:?}");
            return false;
        }
        // No transaction is logged twice on a node: a relayed duplicate applied again would
        // add an entry. (The lengths may differ: records a node got through a full copy,
        // when its first session from a peer started after that peer's writes, have no
        // entry there.)
        let logs: Vec<_> = nodes.iter().map(|n| audit_entries(n)).collect();
        if logs
            .iter()
            .any(|(len, repeated)| *len == 0 || *repeated > 0)
        {
            last = format!("audit logs (entries, repeated): {logs:?}");
            return false;
        }
        true
    });
    assert!(ok, "no convergence: {last}\n{}", dump(nodes));
}

/// Which nodes (by ip) hold a given id.
fn holders(nodes: &[&TestNode], id: &str) -> Vec<String> {
    let want = format!("\"{id}\"");
    nodes
        .iter()
        .filter(|n| ids(n).contains(&want))
        .map(|n| n.ip.clone())
        .collect()
}

/// Hub H (knows both leaves), leaves L1 and L2 (know only H).
fn star(ip: &[String]) -> Vec<TestNode> {
    let (h, l1, l2) = (&ip[0], &ip[1], &ip[2]);
    std::thread::scope(|s| {
        let a = s.spawn(|| TestNode::start(h, &yaml(h, &[l1, l2])));
        let b = s.spawn(|| TestNode::start(l1, &yaml(l1, &[h])));
        let c = s.spawn(|| TestNode::start(l2, &yaml(l2, &[h])));
        vec![a.join().unwrap(), b.join().unwrap(), c.join().unwrap()]
    })
}

#[test]
fn a_write_on_one_leaf_of_a_star_reaches_the_other_leaf_through_the_hub() {
    let ip = ips(SUITE, 3);
    let nodes = star(&ip);
    let all = refs(&nodes);
    let (h, l1, l2) = (&nodes[0], &nodes[1], &nodes[2]);
    create_dog(h, &all);

    insert_ids(l1, &names("l1", 0..5));
    insert_ids(l2, &names("l2", 0..5));
    insert_ids(h, &names("h", 0..5));
    // The failure this pins: the leaf asked the hub only for the hub's own writes, so a
    // write on L1 reached H and never L2.
    assert!(
        wait_until(T, || holders(&all, "l1-4").len() == 3
            && holders(&all, "l2-4").len() == 3),
        "leaf writes did not cross the hub: l1-4 on {:?}, l2-4 on {:?}\n{}",
        holders(&all, "l1-4"),
        holders(&all, "l2-4"),
        dump(&all)
    );
    wait_converged_exactly(&all, 15, T);
    // The leaves still do not know each other: the writes were relayed, not dialled.
    let st = status(l1);
    assert!(
        connection(&st, &l2.ip).is_none(),
        "L1 should only know the hub: {st}"
    );
}

#[test]
fn leaves_converge_through_a_hub_killed_and_started_again_while_they_write() {
    let ip = ips(SUITE, 3);
    let mut nodes = star(&ip);
    let all = refs(&nodes);
    create_dog(&nodes[0], &all);
    insert_ids(&nodes[1], &names("warm1", 0..3));
    insert_ids(&nodes[2], &names("warm2", 0..3));
    wait_converged_exactly(&all, 6, T);

    // Both leaves write batches of 10 until told to stop; meanwhile the hub dies with kill -9
    // and is started again on the same data.
    let stop = AtomicBool::new(false);
    let (hub, leaves) = nodes.split_at_mut(1);
    let written = std::thread::scope(|s| {
        let writers: Vec<_> = leaves
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let stop = &stop;
                s.spawn(move || {
                    let mut b = 0;
                    while !stop.load(Ordering::SeqCst) || b < 20 {
                        insert_ids(n, &names(&format!("leaf{k}-b{b}"), 0..10));
                        b += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    b * 10
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        hub[0].kill9();
        std::thread::sleep(Duration::from_millis(500));
        hub[0].start_again();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        writers
            .into_iter()
            .map(|w| w.join().unwrap())
            .sum::<usize>()
    });
    insert_ids(&nodes[1], &names("after1", 0..5));
    insert_ids(&nodes[2], &names("after2", 0..5));
    let all = refs(&nodes);
    wait_converged_exactly(&all, 6 + written + 10, Duration::from_secs(60));
}

#[test]
fn a_chain_of_four_converges_end_to_end() {
    let ip = ips(SUITE, 4);
    let (a, b, c, d) = (&ip[0], &ip[1], &ip[2], &ip[3]);
    let nodes = std::thread::scope(|s| {
        let hs = [
            s.spawn(|| TestNode::start(a, &yaml(a, &[b]))),
            s.spawn(|| TestNode::start(b, &yaml(b, &[a, c]))),
            s.spawn(|| TestNode::start(c, &yaml(c, &[b, d]))),
            s.spawn(|| TestNode::start(d, &yaml(d, &[c]))),
        ];
        hs.map(|h| h.join().unwrap())
    });
    let all = refs(&nodes);
    create_dog(&nodes[1], &all);
    for (k, n) in nodes.iter().enumerate() {
        insert_ids(n, &names(&format!("n{k}"), 0..25));
    }
    assert!(
        wait_until(T, || holders(&all, "n0-24").len() == 4
            && holders(&all, "n3-24").len() == 4),
        "the ends of the chain did not reach each other: n0-24 on {:?}, n3-24 on {:?}\n{}",
        holders(&all, "n0-24"),
        holders(&all, "n3-24"),
        dump(&all)
    );
    // Updates of one key from both ends: every node settles on the same winner.
    for (k, n) in [(0, &nodes[0]), (3, &nodes[3])] {
        n.ok(json!({"operation":"update","database":"data","table":"dog",
            "records":[{"id":"n1-0","by":format!("end{k}")}]}));
    }
    wait_converged_exactly(&all, 100, T);
}

#[test]
fn a_member_whose_own_link_is_down_comes_through_any_peer_that_holds_it() {
    // N knows P, Q and M; M accepts only Q, so N's own socket to M never comes up. P is N's
    // first live peer by name (the relay for members that are down) but has never heard of
    // M; only Q holds M's writes.
    let ip = ips(SUITE, 4);
    let (p, q, m, n) = (&ip[0], &ip[1], &ip[2], &ip[3]);
    let nodes = std::thread::scope(|s| {
        let hs = [
            s.spawn(|| TestNode::start(p, &yaml(p, &[n]))),
            s.spawn(|| TestNode::start(q, &yaml(q, &[m, n]))),
            s.spawn(|| TestNode::start(m, &yaml(m, &[q]))),
            s.spawn(|| TestNode::start(n, &yaml(n, &[p, q, m]))),
        ];
        hs.map(|h| h.join().unwrap())
    });
    let all = refs(&nodes);
    create_dog(&nodes[1], &all);
    for (k, node) in nodes.iter().enumerate() {
        insert_ids(node, &names(&format!("n{k}"), 0..10));
    }
    // The failure this pins: M's writes were asked for from P alone, which never had them.
    assert!(
        wait_until(T, || holders(&all, "n2-9").len() == 4),
        "M's writes reached only {:?}\n{}",
        holders(&all, "n2-9"),
        dump(&all)
    );
    wait_converged_exactly(&all, 40, T);
}
