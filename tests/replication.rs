//! Multi-process replication tests: real `skerry` nodes on their own loopback addresses
//! (suite 30), linked by `add_node`, some of them behind the fault-injecting proxy of
//! tests/common/proxy.rs. Every wait is bounded (`wait_until`); the only fixed-length waits are
//! observation windows that check something does *not* happen.

mod common;
use common::proxy::Proxy;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SUITE: u8 = 30;

// The generic cluster helpers live in tests/common/cluster.rs; this file adds thin wrappers for
// its one table, dev.dog, and the proxy-specific ones.
use common::cluster::{
    self as c, add_node, creds, dump, holds_for, link_up, peer_names, refs, socket, start_all,
    status, wait_mesh, T,
};

// ---------------------------------------------------------------------------------------------
// Nodes and membership
// ---------------------------------------------------------------------------------------------

/// A replicating node reachable directly at ws://ip:9933.
fn start(ip: &str) -> TestNode {
    c::start_repl(ip)
}

/// A replicating node that advertises ws://<proxy_ip>:PROXY_PORT (peers dial the proxy).
/// Proxies listen on the node's own address on this port: a member must be reached at an
/// address its name resolves to (the dialing side's identity check).
const PROXY_PORT: u16 = 9940;

fn start_behind(ip: &str, proxy_ip: &str) -> TestNode {
    let yaml = format!("{}  url: ws://{proxy_ip}:{PROXY_PORT}\n", c::repl_yaml(ip));
    TestNode::start(ip, &yaml)
}

/// `add_node` of `host` reached at `url` (a proxy), with credentials.
fn add_node_at(on: &TestNode, host: &str, url: &str) {
    c::add_node_with(on, host, json!({ "url": url }));
}

/// `n` shows `peer` disconnected for every database in `dbs` (present but not connected).
fn link_down(st: &Value, peer: &str, dbs: &[&str]) -> bool {
    dbs.iter()
        .all(|db| socket(st, peer, db).is_some_and(|s| s["connected"] == false))
}

/// Starts `ips` (in parallel), creates dev.dog on each, adds the others from the first and
/// waits for the full mesh.
fn mesh(ips: &[String]) -> Vec<TestNode> {
    let nodes = start_all(ips);
    dog_tables(&refs(&nodes));
    for n in &nodes[1..] {
        add_node(&nodes[0], &n.ip);
    }
    wait_mesh(&refs(&nodes), &["system", "dev"]);
    nodes
}

/// Creates dev.dog on every node, before they are linked (the same table made independently
/// on each node). Creating it on one member only is what `three_node_mesh_from_two_add_node_calls`
/// and `table_created_before_add_node_reaches_the_new_member_even_when_empty` check; the other
/// tests do not depend on schema replication, so a regression there fails those two only.
fn dog_tables(nodes: &[&TestNode]) {
    for n in nodes {
        create_dog_table(n);
    }
}

// ---------------------------------------------------------------------------------------------
// Data: dev.dog
// ---------------------------------------------------------------------------------------------

fn wait_table(nodes: &[&TestNode]) {
    c::wait_table(nodes, "dog")
}

fn record_count(n: &TestNode) -> Option<u64> {
    c::record_count(n, "dog")
}

fn get(n: &TestNode, id: &str) -> Option<Value> {
    c::get(n, "dog", &json!(id))
}

fn insert(n: &TestNode, recs: Value) -> Value {
    c::insert(n, "dog", recs)
}

/// An upsert whose answer carries `txn_time` (the version peers must keep).
fn upsert(n: &TestNode, recs: Value) -> Value {
    n.ok(json!({"operation":"upsert","database":"dev","table":"dog","records":recs,"write_details":true}))
}

fn delete(n: &TestNode, ids: Value) -> Value {
    c::delete(n, "dog", ids)
}

/// Waits until every node holds the same records (and `expect` of them when given); returns them.
fn wait_converged(nodes: &[&TestNode], expect: Option<usize>) -> BTreeMap<String, Value> {
    c::wait_converged(nodes, "dog", expect, T)
}

/// Waits until record `id` is on every node in `nodes`.
fn wait_present(nodes: &[&TestNode], id: &str) {
    c::wait_present(nodes, "dog", id)
}

/// The audit log of dev.dog as a set of (origin, version, operation, hash_values, records).
fn audit(n: &TestNode) -> BTreeSet<String> {
    let r = n.ok(json!({"operation":"read_audit_log","database":"dev","table":"dog"}));
    r.as_array()
        .expect("audit log array")
        .iter()
        .map(|e| {
            json!([
                e["origin"],
                e["version"],
                e["operation"],
                e["hash_values"],
                e["records"]
            ])
            .to_string()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------------

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Epoch seconds of an HTTP date ("Thu, 26 Nov 2026 17:10:21 GMT"), checking the weekday.
fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split(' ').collect();
    let [wd, d, mon, y, hms, "GMT"] = parts.as_slice() else {
        return None;
    };
    let wd = wd.strip_suffix(',')?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| x == mon)? as i64 + 1;
    if d.len() != 2 || y.len() != 4 || hms.len() != 8 {
        return None;
    }
    let (d, y): (i64, i64) = (d.parse().ok()?, y.parse().ok()?);
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, mi, se] = t.as_slice() else {
        return None;
    };
    let days = days_from_civil(y, m, d);
    const WEEK: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    if WEEK[days.rem_euclid(7) as usize] != wd {
        return None;
    }
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

#[test]
fn http_date_parser_reads_the_seed_format() {
    assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
    assert_eq!(
        parse_http_date("Wed, 12 Feb 2025 19:09:34 GMT"),
        Some(1_739_387_374)
    );
    assert_eq!(parse_http_date("Mon, 12 Feb 2025 19:09:34 GMT"), None);
    assert_eq!(parse_http_date("2025-02-12T19:09:34Z"), None);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn three_node_mesh_from_two_add_node_calls() {
    let ip = ips(SUITE, 3);
    let nodes = start_all(&ip);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    add_node(a, &b.ip);
    add_node(a, &c.ip);
    // B and C never heard of each other directly: gossip through system.hdb_nodes.
    wait_mesh(&[a, b, c], &["system"]);
    // A database and table created on one member appear on all, with their sockets.
    create_dog_table(a);
    wait_mesh(&[a, b, c], &["system", "dev"]);
    for n in [a, b, c] {
        let st = status(n);
        assert_eq!(st["connections"].as_array().unwrap().len(), 2, "{st}");
        for conn in st["connections"].as_array().unwrap() {
            let dbs: BTreeSet<&str> = conn["database_sockets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["database"].as_str().unwrap())
                .collect();
            assert_eq!(dbs, BTreeSet::from(["dev", "system"]), "{st}");
        }
    }
    wait_table(&[a, b, c]);

    // Distinct ids written on every node.
    let mut txn_of = BTreeMap::new();
    for (k, n) in [a, b, c].into_iter().enumerate() {
        let recs: Vec<Value> = (0..10)
            .map(|i| json!({"id": k * 100 + i, "name": format!("dog {i} of {}", n.ip), "from": n.ip}))
            .collect();
        let r = insert(n, Value::Array(recs));
        for i in 0..10 {
            txn_of.insert((k * 100 + i).to_string(), r["txn_time"].clone());
        }
    }
    let all = wait_converged(&[a, b, c], Some(30));
    for (id, rec) in &all {
        // The origin's transaction time is the record's version everywhere.
        assert_eq!(rec["__updatedtime__"], txn_of[id], "{rec}");
        assert_eq!(rec["__createdtime__"], txn_of[id], "{rec}");
    }
    // Every node logged the same transactions under the same origins and versions.
    let log_a = audit(a);
    assert_eq!(log_a.len(), 3, "{log_a:?}");
    assert!(
        wait_until(T, || audit(b) == log_a && audit(c) == log_a),
        "audit logs differ:\nA {log_a:?}\nB {:?}\nC {:?}",
        audit(b),
        audit(c)
    );
}

/// One acknowledged write of the concurrency test.
#[derive(Debug, Clone)]
struct Write {
    key: String,
    txn_time: f64,
    writer: String,
    round: u64,
    delete: bool,
}

#[test]
fn table_created_before_add_node_reaches_the_new_member_even_when_empty() {
    let ip = ips(SUITE, 2);
    let nodes = start_all(&ip);
    let (a, b) = (&nodes[0], &nodes[1]);
    create_dog_table(a);
    a.ok(json!({"operation":"create_table","database":"dev","table":"cat","primary_key":"id"}));
    insert_into(a, "cat", json!([{"id": 1}]));
    add_node(a, &b.ip);
    wait_mesh(&[a, b], &["system", "dev"]);
    let describe = |n: &TestNode, t: &str| {
        n.op(json!({"operation":"describe_table","database":"dev","table":t}))
    };
    assert!(
        wait_until(T, || describe(b, "cat").0 == 200),
        "dev.cat (one record) did not reach B"
    );
    assert!(
        wait_until(Duration::from_secs(10), || describe(b, "dog").0 == 200),
        "dev.dog (empty) never reached B: {:?}\n{}",
        describe(b, "dog"),
        b.log()
    );
    assert_eq!(describe(b, "dog").1["hash_attribute"], "id");
    insert(b, json!([{"id": 1}]));
    wait_converged(&[a, b], Some(1));
}

fn insert_into(n: &TestNode, table: &str, recs: Value) -> Value {
    n.ok(json!({"operation":"insert","database":"dev","table":table,"records":recs}))
}

#[test]
fn concurrent_writes_to_one_key_converge_to_one_winner() {
    let ip = ips(SUITE, 3);
    let nodes = mesh(&ip);
    const ROUNDS: u64 = 60;
    const KEYS: u64 = 3;
    let writes: Mutex<Vec<Write>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (k, n) in nodes.iter().enumerate() {
            let writes = &writes;
            s.spawn(move || {
                for round in 0..ROUNDS {
                    let key = format!("k{}", round % KEYS);
                    // Mostly upserts of the same keys everywhere, some deletes (tombstones).
                    let delete = (round + k as u64).is_multiple_of(5);
                    let r = if delete {
                        n.ok(json!({"operation":"delete","database":"dev","table":"dog","ids":[key],"write_details":true}))
                    } else {
                        upsert(
                            n,
                            json!([{"id": key, "writer": n.ip, "round": round, "pad": "x".repeat(round as usize)}]),
                        )
                    };
                    writes.lock().unwrap().push(Write {
                        key,
                        txn_time: r["txn_time"].as_f64().expect("txn_time"),
                        writer: n.ip.clone(),
                        round,
                        delete,
                    });
                }
            });
        }
    });
    let all = wait_converged(&refs(&nodes), None);
    let writes = writes.into_inner().unwrap();
    for k in 0..KEYS {
        let key = format!("k{k}");
        let rec = all.get(&json!(key).to_string());
        // LWW: the greatest version wins (ties by origin name); txn_time shows the version.
        let max_t = writes
            .iter()
            .filter(|w| w.key == key)
            .map(|w| w.txn_time)
            .fold(f64::MIN, f64::max);
        let candidates: Vec<&Write> = writes
            .iter()
            .filter(|w| w.key == key && w.txn_time == max_t)
            .collect();
        let matches = |w: &Write| match rec {
            None => w.delete,
            Some(r) => {
                !w.delete
                    && r["writer"] == w.writer.as_str()
                    && r["round"] == w.round
                    && r["__updatedtime__"].as_f64() == Some(w.txn_time)
            }
        };
        if candidates.len() == 1 {
            assert!(
                matches(candidates[0]),
                "{key}: the latest write {:?} should win, every node has {rec:?}",
                candidates[0]
            );
        } else {
            // Equal display times: one version (ties go to the greater origin name) or
            // versions too close for f64; the winner is one of them.
            assert!(
                candidates.iter().any(|w| matches(w)),
                "{key}: {rec:?} is none of the latest writes {candidates:?}"
            );
        }
    }
}

#[test]
fn delete_not_resurrected_after_rejoin() {
    let ip = ips(SUITE, 2);
    let mut nodes = mesh(&ip);
    insert(&nodes[0], json!([{"id":"k","v":1},{"id":"other","v":1}]));
    wait_converged(&refs(&nodes), Some(2));

    nodes[1].kill9();
    delete(&nodes[0], json!(["k"]));
    insert(&nodes[0], json!([{"id":"marker1"}]));
    nodes[1].start_again();
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_present(&[b], "marker1");
    assert_eq!(get(a, "k"), None, "the delete must hold on A");
    assert_eq!(
        get(b, "k"),
        None,
        "B caught up past the delete, k must be gone"
    );
    // Still gone once B is fully back in the mesh and more writes went both ways.
    wait_mesh(&[a, b], &["system", "dev"]);
    insert(a, json!([{"id":"marker2"}]));
    insert(b, json!([{"id":"marker3"}]));
    let all = wait_converged(&[a, b], Some(4));
    assert!(!all.contains_key("\"k\""), "{all:?}");

    // A strictly newer write of the key (on B) wins on both.
    upsert(b, json!([{"id":"k","v":3}]));
    let all = wait_converged(&[a, b], Some(5));
    assert_eq!(all["\"k\""]["v"], 3, "{all:?}");
}

#[test]
fn delete_not_resurrected_when_isolated_node_writes_the_key_later_then_heals() {
    // Harper's probe 2: B restarts cut off from A, writes the key A deleted while it was down,
    // then the link heals: the later write (B's) wins on both nodes.
    let ip = ips(SUITE, 4);
    let (pa_ip, pb_ip) = (&ip[0], &ip[1]);
    let pa = Proxy::start(&format!("{pa_ip}:{PROXY_PORT}"), &format!("{}:9933", ip[0]));
    let pb = Proxy::start(&format!("{pb_ip}:{PROXY_PORT}"), &format!("{}:9933", ip[1]));
    let a = start_behind(&ip[0], pa_ip);
    let mut b = start_behind(&ip[1], pb_ip);
    dog_tables(&[&a, &b]);
    add_node_at(&a, &b.ip, &format!("ws://{pb_ip}:{PROXY_PORT}"));
    wait_mesh(&[&a, &b], &["system", "dev"]);
    insert(&a, json!([{"id":"k","v":1},{"id":"k2","v":1}]));
    wait_converged(&[&a, &b], Some(2));

    b.kill9();
    delete(&a, json!(["k"]));
    pa.blackhole(true);
    pb.blackhole(true);
    b.start_again();
    // B is isolated: it still has the old value and has not seen the delete.
    assert_eq!(get(&b, "k").map(|r| r["v"].clone()), Some(json!(1)));
    let r = b.ok(
        json!({"operation":"update","database":"dev","table":"dog","records":[{"id":"k","v":2}]}),
    );
    assert_eq!(r["message"], "updated 1 of 1 records", "{r}");
    // And the mirror case: B writes k2 first, A deletes it afterwards (the delete is newer).
    // Within one millisecond the two versions can be equal (then the tie-break by node name
    // decides, correctly, but not what this case is about): let the clock move past the
    // upsert's millisecond first.
    let upserted_ms = upsert(&b, json!([{"id":"k2","v":2}]))["txn_time"]
        .as_f64()
        .expect("txn_time");
    assert!(
        wait_until(T, || c::now_ms() as f64 > upserted_ms.floor()),
        "the clock never passed {upserted_ms}"
    );
    delete(&a, json!(["k2"]));
    assert!(
        holds_for(Duration::from_millis(1500), || get(&a, "k").is_none()
            && get(&b, "k").is_some_and(|r| r["v"] == 2)
            && get(&b, "k2").is_some()),
        "the blackhole leaked"
    );
    pa.blackhole(false);
    pb.blackhole(false);
    pa.cut();
    pb.cut();
    let all = wait_converged(&[&a, &b], Some(1));
    assert_eq!(
        all["\"k\""]["v"], 2,
        "the later write must win on both: {all:?}"
    );
    assert!(
        !all.contains_key("\"k2\""),
        "a stale write must not resurrect k2: {all:?}"
    );
}

/// Inserts `<prefix>-<i>` records one request at a time on `addr` until `stop`, recording the
/// acknowledged ids. Connection errors (node down) are retried at a slow pace.
fn write_loop(addr: &str, prefix: &str, stop: &AtomicBool, acked: &Mutex<Vec<String>>) {
    let auth = basic(USER, PASS);
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let id = format!("{prefix}-{i}");
        i += 1;
        let body = json!({"operation":"insert","database":"dev","table":"dog",
            "records":[{"id": id, "i": i, "body": "some payload to replicate"}]});
        let (s, r) = post_json(addr, Some(&auth), body);
        if s == 200 && r["inserted_hashes"] == json!([id]) {
            acked.lock().unwrap().push(id);
        } else if s == 0 {
            // The node is down: pace the retries.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sets the flag when dropped, so writer threads stop even when the test panics in a scope.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Acknowledged ids missing from `all`.
fn missing_acked(all: &BTreeMap<String, Value>, acked: &[Mutex<Vec<String>>]) -> Vec<String> {
    acked
        .iter()
        .flat_map(|l| l.lock().unwrap().clone())
        .filter(|id| !all.contains_key(&json!(id).to_string()))
        .collect()
}

/// Waits until every node's audit log of dev.dog equals the first node's.
fn wait_same_audit(nodes: &[&TestNode]) {
    let mut last = String::new();
    let ok = wait_until(T, || {
        let first = audit(nodes[0]);
        nodes[1..].iter().all(|n| {
            let other = audit(n);
            if other != first {
                let only_first: Vec<_> = first.difference(&other).take(3).collect();
                let only_other: Vec<_> = other.difference(&first).take(3).collect();
                last = format!(
                    "{}: {} entries, {}: {} entries; only on the first: {only_first:?}; only on the other: {only_other:?}",
                    nodes[0].ip,
                    first.len(),
                    n.ip,
                    other.len()
                );
                return false;
            }
            true
        })
    });
    assert!(ok, "audit logs differ: {last}");
}

#[test]
fn kill_9_under_write_load_then_restart_catches_up() {
    let ip = ips(SUITE, 3);
    let mut nodes = mesh(&ip);
    let stop = AtomicBool::new(false);
    let acked: [Mutex<Vec<String>>; 2] = [Mutex::new(Vec::new()), Mutex::new(Vec::new())];
    let count = |k: usize| acked[k].lock().unwrap().len();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let (addr_a, addr_b) = (nodes[0].addr(), nodes[1].addr());
        let (stop, acked_a, acked_b) = (&stop, &acked[0], &acked[1]);
        s.spawn(move || write_loop(&addr_a, "a", stop, acked_a));
        s.spawn(move || write_loop(&addr_b, "b", stop, acked_b));
        assert!(
            wait_until(T, || count(0) >= 100 && count(1) >= 50),
            "writers too slow: {} {}",
            count(0),
            count(1)
        );
        // The writer node dies mid-load (its peers may not have all its writes yet).
        nodes[0].kill9();
        let killed = Instant::now();
        let a_ip = nodes[0].ip.clone();
        assert!(
            wait_until(T, || link_down(
                &status(&nodes[1]),
                &a_ip,
                &["system", "dev"]
            )),
            "B still shows the killed A connected"
        );
        assert!(
            killed.elapsed() < Duration::from_millis(2500),
            "a dead peer was noticed after {:?}",
            killed.elapsed()
        );
        let b_at_kill = count(1);
        assert!(wait_until(T, || count(1) >= b_at_kill + 50));
        nodes[0].start_again();
        let (a0, b0) = (count(0), count(1));
        assert!(
            wait_until(T, || count(0) >= a0 + 100 && count(1) >= b0 + 50),
            "writes did not continue: a {} b {}",
            count(0),
            count(1)
        );
        // Then a receiving node dies mid-load.
        nodes[2].kill9();
        let (a0, b0) = (count(0), count(1));
        assert!(wait_until(T, || count(0) >= a0 + 50 && count(1) >= b0 + 50));
        nodes[2].start_again();
        let (a0, b0) = (count(0), count(1));
        assert!(wait_until(T, || count(0) >= a0 + 50 && count(1) >= b0 + 50));
    });
    let all = wait_converged(&refs(&nodes), None);
    let missing = missing_acked(&all, &acked);
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost (first: {:?}) of {} + {}",
        missing.len(),
        &missing[..missing.len().min(10)],
        count(0),
        count(1)
    );
    wait_same_audit(&refs(&nodes));
}

#[test]
fn relay_takes_over_mid_stream_when_a_direct_link_breaks_and_nothing_is_lost() {
    let ip = ips(SUITE, 6);
    let (a_ip, b_ip, c_ip) = (&ip[0], &ip[1], &ip[2]);
    let (pa_ip, pb_ip, pc_ip) = (a_ip, b_ip, c_ip);
    let pa = Proxy::start(&format!("{pa_ip}:{PROXY_PORT}"), &format!("{a_ip}:9933"));
    let _pb = Proxy::start(&format!("{pb_ip}:{PROXY_PORT}"), &format!("{b_ip}:9933"));
    let pc = Proxy::start(&format!("{pc_ip}:{PROXY_PORT}"), &format!("{c_ip}:9933"));
    let (a, b, c) = std::thread::scope(|s| {
        let a = s.spawn(|| start_behind(a_ip, pa_ip));
        let b = s.spawn(|| start_behind(b_ip, pb_ip));
        let c = s.spawn(|| start_behind(c_ip, pc_ip));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    let all = [&a, &b, &c];
    let dbs = ["system", "dev"];
    dog_tables(&all);
    add_node_at(&a, b_ip, &format!("ws://{pb_ip}:{PROXY_PORT}"));
    add_node_at(&a, c_ip, &format!("ws://{pc_ip}:{PROXY_PORT}"));
    wait_mesh(&all, &dbs);

    let stop = AtomicBool::new(false);
    let acked: [Mutex<Vec<String>>; 2] = [Mutex::new(Vec::new()), Mutex::new(Vec::new())];
    let count = |k: usize| acked[k].lock().unwrap().len();
    let last = |k: usize| acked[k].lock().unwrap().last().cloned().unwrap();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let (addr_a, addr_c) = (a.addr(), c.addr());
        let (stop, acked_a, acked_c) = (&stop, &acked[0], &acked[1]);
        s.spawn(move || write_loop(&addr_a, "a", stop, acked_a));
        s.spawn(move || write_loop(&addr_c, "c", stop, acked_c));
        assert!(wait_until(T, || count(0) >= 50 && count(1) >= 50));

        // Break A-C mid-stream: from now on only B can carry A's writes to C and back.
        pa.block(c_ip);
        pc.block(a_ip);
        pa.cut();
        pc.cut();
        let (a0, c0) = (count(0), count(1));
        assert!(wait_until(T, || count(0) >= a0 + 50 && count(1) >= c0 + 50));
        let (la, lc) = (last(0), last(1));
        wait_present(&[&c], &la);
        wait_present(&[&a], &lc);
        let sa = status(&a);
        assert!(link_down(&sa, c_ip, &dbs), "A-C must be down:\n{sa:#}");
        assert!(
            wait_until(T, || carries(&a, b_ip, "dev", c_ip)),
            "A's socket to B should carry C:\n{}",
            dump(&[&a])
        );

        // Heal while the writes go on.
        pa.unblock(c_ip);
        pc.unblock(a_ip);
        assert!(
            wait_until(Duration::from_secs(45), || link_up(&status(&a), c_ip, &dbs)
                && link_up(&status(&c), a_ip, &dbs)),
            "A and C did not reconnect:\n{}",
            dump(&all)
        );
        let (a0, c0) = (count(0), count(1));
        assert!(wait_until(T, || count(0) >= a0 + 30 && count(1) >= c0 + 30));
    });
    let recs = wait_converged(&all, None);
    let missing = missing_acked(&recs, &acked);
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    wait_same_audit(&all);
}

#[test]
fn fourth_node_added_after_5000_records_receives_all() {
    let ip = ips(SUITE, 4);
    let nodes = mesh(&ip[..3]);
    for batch in 0..20usize {
        let recs: Vec<Value> = (0..250)
            .map(|i| {
                let id = batch * 250 + i;
                json!({"id": id, "name": format!("dog-{id}"), "batch": batch, "owner": nodes[batch % 3].ip})
            })
            .collect();
        insert(&nodes[batch % 3], Value::Array(recs));
    }
    // Some deleted keys too: D must not get them back (tombstones travel with the copy).
    let gone: Vec<Value> = (10_000..10_100).map(|i| json!({"id": i})).collect();
    insert(&nodes[0], Value::Array(gone));
    wait_converged(&refs(&nodes), Some(5100));
    delete(
        &nodes[2],
        Value::Array((10_000..10_100).map(|i| json!(i)).collect()),
    );
    let before = wait_converged(&refs(&nodes), Some(5000));
    let d = start(&ip[3]);
    add_node(&nodes[1], &d.ip);
    let all: Vec<&TestNode> = nodes.iter().chain([&d]).collect();
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || record_count(&d) == Some(5000)),
        "D has {:?} records after {:?}:\n{}",
        record_count(&d),
        t0.elapsed(),
        dump(&all)
    );
    let after = wait_converged(&all, Some(5000));
    assert_eq!(after, before, "the copy on D differs");
    // D is a member like the others: its writes reach them and theirs reach it.
    insert(&d, json!([{"id": 5000, "owner": d.ip}]));
    insert(&nodes[2], json!([{"id": 5001, "owner": nodes[2].ip}]));
    wait_converged(&all, Some(5002));
    wait_mesh(&all, &["system", "dev"]);
}

#[test]
fn new_member_killed_during_its_initial_copy_under_writes_ends_complete() {
    let ip = ips(SUITE, 2);
    let a = start(&ip[0]);
    create_dog_table(&a);
    for batch in 0..10u64 {
        let recs: Vec<Value> = (0..1000)
            .map(|i| json!({"id": batch * 1000 + i, "name": format!("dog {i} of batch {batch}, with some padding to make the rows a bit bigger")}))
            .collect();
        insert(&a, Value::Array(recs));
    }
    // The test hook slows each committed batch of a received copy, so the kill lands mid-copy.
    let mut d = TestNode::start_with_env(
        &ip[1],
        &c::repl_yaml(&ip[1]),
        &[("SKERRY_TEST_COPY_DELAY_MS", "300")],
    );
    let stop = AtomicBool::new(false);
    let acked: [Mutex<Vec<String>>; 1] = [Mutex::new(Vec::new())];
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let addr = a.addr();
        let (stop, acked) = (&stop, &acked[0]);
        s.spawn(move || write_loop(&addr, "during", stop, acked));
        let written = || acked.lock().unwrap().len();
        add_node(&a, &d.ip);
        // Kill D as soon as its copy has started, then let it resume.
        assert!(
            wait_until(T, || record_count(&d).unwrap_or(0) > 0),
            "the copy never started"
        );
        let at_kill = record_count(&d);
        d.kill9();
        assert!(
            at_kill.unwrap_or(0) < 10_000,
            "the copy finished before the kill ({at_kill:?}): the test needs more data"
        );
        d.start_again();
        assert!(
            wait_until(Duration::from_secs(60), || record_count(&d)
                .is_some_and(|c| c >= 10_000)),
            "D did not resume its copy: {:?}",
            record_count(&d)
        );
        let n = written();
        assert!(wait_until(T, || written() >= n + 20));
    });
    let all = wait_converged(&[&a, &d], None);
    let missing = missing_acked(&all, &acked);
    assert!(
        missing.is_empty(),
        "{} writes made during the copy are missing (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(all.len(), 10_000 + acked[0].lock().unwrap().len());
}

#[test]
fn remove_node_stops_replication_durably_and_re_add_works_without_restart() {
    let ip = ips(SUITE, 3);
    let mut nodes = mesh(&ip);
    let c_ip = ip[2].clone();
    insert(&nodes[0], json!([{"id":"before"}]));
    wait_converged(&refs(&nodes), Some(1));

    // Unknown node: 400 (by hostname or by name).
    let (s, r) = nodes[0].op(json!({"operation":"remove_node","name":"127.30.255.253"}));
    assert_eq!(
        (s, &r["error"]),
        (400, &json!("127.30.255.253 does not exist")),
        "{r}"
    );
    let (s, r) = nodes[0].op(json!({"operation":"remove_node","hostname":"127.30.255.254"}));
    assert_eq!(
        (s, &r["error"]),
        (400, &json!("127.30.255.254 does not exist")),
        "{r}"
    );

    let r = nodes[0].ok(json!({"operation":"remove_node","hostname":c_ip}));
    assert_eq!(
        r,
        json!({"message": format!("Successfully removed '{c_ip}' from cluster")})
    );
    {
        let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
        assert!(
            wait_until(T, || [a, b]
                .iter()
                .all(|n| !peer_names(&status(n)).contains(&c_ip))),
            "C still listed:\n{}",
            dump(&[a, b, c])
        );
        assert!(
            wait_until(T, || status(c)["is_enabled"] == false),
            "C does not know it was removed:\n{}",
            dump(&[c])
        );
        insert(a, json!([{"id":"a-after"}]));
        insert(b, json!([{"id":"b-after"}]));
        insert(c, json!([{"id":"c-after"}]));
        wait_present(&[a, b], "a-after");
        wait_present(&[a, b], "b-after");
        assert!(
            holds_for(Duration::from_secs(2), || get(c, "a-after").is_none()
                && get(c, "b-after").is_none()
                && get(a, "c-after").is_none()
                && get(b, "c-after").is_none()),
            "data still flows to or from the removed node"
        );
    }

    // Restarts of either side keep C out.
    nodes[0].restart();
    {
        let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
        wait_mesh(&[a, b], &["system", "dev"]);
        assert!(!peer_names(&status(a)).contains(&c_ip));
        insert(a, json!([{"id":"a-after-restart"}]));
        wait_present(&[b], "a-after-restart");
        assert!(
            holds_for(Duration::from_secs(2), || get(c, "a-after-restart")
                .is_none()
                && !peer_names(&status(a)).contains(&c_ip)),
            "C got data after A restarted"
        );
    }
    nodes[2].restart();
    {
        let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
        assert_eq!(status(c)["is_enabled"], false, "C forgot it was removed");
        insert(c, json!([{"id":"c-after-restart"}]));
        assert!(
            holds_for(Duration::from_secs(2), || get(a, "c-after-restart")
                .is_none()
                && get(b, "c-after-restart").is_none()
                && get(c, "a-after").is_none()
                && [a, b]
                    .iter()
                    .all(|n| !peer_names(&status(n)).contains(&c_ip))),
            "C replicates again after its restart"
        );

        // Re-adding C (no restart anywhere) resumes replication both ways, with catch-up.
        add_node(a, &c_ip);
        wait_mesh(&[a, b, c], &["system", "dev"]);
        assert_eq!(status(c)["is_enabled"], true);
        let all = wait_converged(&[a, b, c], Some(6));
        for id in [
            "before",
            "a-after",
            "b-after",
            "c-after",
            "a-after-restart",
            "c-after-restart",
        ] {
            assert!(
                all.contains_key(&json!(id).to_string()),
                "{id} missing: {all:?}"
            );
        }
        insert(c, json!([{"id":"c-readded"}]));
        insert(b, json!([{"id":"b-readded"}]));
        wait_converged(&[a, b, c], Some(8));
    }
}

#[test]
fn line_topology_a_b_c_converges_when_a_and_c_cannot_reach_each_other() {
    let ip = ips(SUITE, 6);
    let (a_ip, b_ip, c_ip) = (&ip[0], &ip[1], &ip[2]);
    let (pa_ip, pb_ip, pc_ip) = (a_ip, b_ip, c_ip);
    let pa = Proxy::start(&format!("{pa_ip}:{PROXY_PORT}"), &format!("{a_ip}:9933"));
    let _pb = Proxy::start(&format!("{pb_ip}:{PROXY_PORT}"), &format!("{b_ip}:9933"));
    let pc = Proxy::start(&format!("{pc_ip}:{PROXY_PORT}"), &format!("{c_ip}:9933"));
    pa.block(c_ip);
    pc.block(a_ip);
    let (a, b, c) = std::thread::scope(|s| {
        let a = s.spawn(|| start_behind(a_ip, pa_ip));
        let b = s.spawn(|| start_behind(b_ip, pb_ip));
        let c = s.spawn(|| start_behind(c_ip, pc_ip));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    let all = [&a, &b, &c];
    let dbs = ["system", "dev"];
    dog_tables(&all);
    add_node_at(&a, b_ip, &format!("ws://{pb_ip}:{PROXY_PORT}"));
    add_node_at(&b, c_ip, &format!("ws://{pc_ip}:{PROXY_PORT}"));
    let line_up = |dbs: &[&str]| {
        wait_until(T, || {
            let (sa, sb, sc) = (status(&a), status(&b), status(&c));
            link_up(&sa, b_ip, dbs)
                && link_up(&sb, a_ip, dbs)
                && link_up(&sb, c_ip, dbs)
                && link_up(&sc, b_ip, dbs)
                // Gossip made A and C members of each other, but they cannot connect.
                && peer_names(&sa).contains(c_ip.as_str())
                && peer_names(&sc).contains(a_ip.as_str())
        })
    };
    assert!(line_up(&dbs), "line A-B-C not up:\n{}", dump(&all));
    insert(&a, json!([{"id":"from-a","v":1}]));
    insert(&c, json!([{"id":"from-c","v":1}]));
    wait_present(&[&c], "from-a");
    wait_present(&[&a], "from-c");
    wait_converged(&all, Some(2));
    // While the direct link is down, A gets C's transactions over B's socket, and
    // cluster_status says so (`nodes` of the socket to B includes C), on both ends.
    let sa = status(&a);
    assert!(link_down(&sa, c_ip, &dbs), "A-C must be down:\n{sa:#}");
    for (n, far) in [(&a, c_ip), (&c, a_ip)] {
        for db in dbs {
            assert!(
                wait_until(T, || carries(n, b_ip, db, far)),
                "{}'s {db} socket to B should list {far} in `nodes` (its transactions arrive that way):\n{}",
                n.ip,
                dump(&[n])
            );
        }
    }
    assert!(
        pa.refused() > 0 && pc.refused() > 0,
        "the direct link was never tried"
    );

    // Heal: A and C connect directly and keep converging; B no longer relays.
    pa.unblock(c_ip);
    pc.unblock(a_ip);
    assert!(
        wait_until(Duration::from_secs(45), || {
            let (sa, sc) = (status(&a), status(&c));
            link_up(&sa, c_ip, &dbs) && link_up(&sc, a_ip, &dbs)
        }),
        "A and C did not connect directly after the heal:\n{}",
        dump(&all)
    );
    assert!(
        wait_until(T, || {
            let sa = status(&a);
            socket(&sa, b_ip, "dev").is_some_and(|s| s["nodes"] == json!([b_ip]))
        }),
        "A still relays C through B:\n{}",
        dump(&[&a])
    );
    insert(&a, json!([{"id":"from-a-2"}]));
    insert(&c, json!([{"id":"from-c-2"}]));
    insert(&b, json!([{"id":"from-b-2"}]));
    wait_converged(&all, Some(5));
}

/// `n`'s socket to `peer` for `db` lists `origin` in `nodes` (carries its transactions).
fn carries(n: &TestNode, peer: &str, db: &str, origin: &str) -> bool {
    socket(&status(n), peer, db)
        .and_then(|s| s["nodes"].as_array().cloned())
        .is_some_and(|nodes| nodes.contains(&json!(origin)))
}

/// B's view of A: the sockets of both databases connected?
/// Waits until `b` shows its link with `a_ip` down, and checks it took no longer than the
/// ping timeout (2 s) allows, with slack for a loaded machine.
fn wait_b_sees_a_down_in_time(b: &TestNode, a_ip: &str, cause: &str) {
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || b_sees_a(b, a_ip, false)),
        "still connected after {cause}:\n{}",
        dump(&[b])
    );
    let took = t0.elapsed();
    assert!(
        took <= Duration::from_millis(4500),
        "connected:false after {cause} took {took:?}, ping timeout is 2 s"
    );
    eprintln!("{cause} noticed after {took:?}");
}

fn b_sees_a(b: &TestNode, a_ip: &str, up: bool) -> bool {
    let st = status(b);
    if up {
        link_up(&st, a_ip, &["system", "dev"])
    } else {
        link_down(&st, a_ip, &["system", "dev"])
    }
}

#[test]
fn connected_turns_false_within_ping_timeout_when_link_is_blackholed() {
    let ip = ips(SUITE, 3);
    let (a_ip, b_ip, p_ip) = (&ip[0], &ip[1], &ip[0]);
    let proxy = Proxy::start(&format!("{p_ip}:{PROXY_PORT}"), &format!("{a_ip}:9933"));
    // B reaches A only through the proxy; A reaches B directly.
    let a = start_behind(a_ip, p_ip);
    let b = start(b_ip);
    dog_tables(&[&a, &b]);
    add_node(&a, b_ip);
    wait_mesh(&[&a, &b], &["system", "dev"]);
    assert!(
        holds_for(Duration::from_secs(3), || b_sees_a(&b, a_ip, true)),
        "an idle healthy link must stay connected (pings):\n{}",
        dump(&[&a, &b])
    );

    // Blackhole: no bytes, sockets open. connected turns false within the ping timeout (2 s).
    proxy.blackhole(true);
    wait_b_sees_a_down_in_time(&b, a_ip, "a blackhole");
    let st = status(&b);
    assert!(
        socket(&st, a_ip, "dev")
            .unwrap()
            .get("lastConnectionError")
            .is_some(),
        "a down link explains itself: {st:#}"
    );
    // A's sending side to B (the socket B dialled through the proxy) times out too.
    assert!(
        wait_until(Duration::from_secs(5), || {
            socket(&status(&a), b_ip, "dev").is_some_and(|s| s["sending"] == false)
        }),
        "A still thinks it is sending to B through a blackhole:\n{}",
        dump(&[&a])
    );
    insert(&a, json!([{"id":"during-blackhole"}]));
    assert!(get(&b, "during-blackhole").is_none());
    proxy.blackhole(false);
    assert!(
        wait_until(T, || b_sees_a(&b, a_ip, true)),
        "not connected again after the blackhole:\n{}",
        dump(&[&a, &b])
    );
    wait_converged(&[&a, &b], Some(1));

    // A reset: the link drops and comes back by itself.
    proxy.cut();
    insert(&a, json!([{"id":"after-cut"}]));
    wait_converged(&[&a, &b], Some(2));
    assert!(wait_until(T, || b_sees_a(&b, a_ip, true)));

    // A reset while reconnection is refused: disconnected at once, then recovers.
    proxy.block(b_ip);
    proxy.cut();
    wait_b_sees_a_down_in_time(&b, a_ip, "a reset");
    insert(&a, json!([{"id":"while-refused"}]));
    proxy.unblock(b_ip);
    assert!(
        wait_until(T, || b_sees_a(&b, a_ip, true)),
        "not connected again after the reset:\n{}",
        dump(&[&a, &b])
    );
    wait_converged(&[&a, &b], Some(3));
}

#[test]
fn cluster_status_fields_present_and_plausible() {
    let ip = ips(SUITE, 2);
    let nodes = mesh(&ip);
    let (a, b) = (&nodes[0], &nodes[1]);
    let ra = insert(a, json!([{"id":"from-a"}]));
    let rb = insert(b, json!([{"id":"from-b"}]));
    wait_converged(&[a, b], Some(2));
    for (me, peer, peer_txn) in [(a, b, &rb), (b, a, &ra)] {
        let peer_txn = peer_txn["txn_time"].as_f64().unwrap();
        // Wait for the figures that lag the data a little (ack, a pong).
        let mut st = Value::Null;
        let ready = wait_until(T, || {
            st = status(me);
            ["system", "dev"].iter().all(|db| {
                socket(&st, &peer.ip, db).is_some_and(|s| {
                    s["latency"].is_number()
                        && s.get("lastCommitConfirmed").is_some()
                        && s["lastReceivedVersion"]
                            .as_f64()
                            .is_some_and(|v| v >= peer_txn)
                        || *db == "system" && s["latency"].is_number()
                })
            })
        });
        assert!(ready, "status of {} never complete:\n{st:#}", me.ip);
        assert_eq!(st["type"], "cluster-status");
        assert_eq!(st["node_name"], me.ip.as_str());
        assert_eq!(st["is_enabled"], true);
        assert_eq!(st["url"], format!("ws://{}:9933", me.ip));
        let conns = st["connections"].as_array().unwrap();
        assert_eq!(conns.len(), 1, "{st:#}");
        let conn = &conns[0];
        assert_eq!(conn["name"], peer.ip.as_str());
        assert_eq!(conn["url"], format!("ws://{}:9933", peer.ip));
        assert_eq!(conn["replicates"], true);
        assert!(conn.get("subscriptions").is_some(), "{conn}");
        let sockets = conn["database_sockets"].as_array().unwrap();
        assert_eq!(sockets.len(), 2, "{conn:#}");
        assert_eq!(sockets[0]["database"], "system", "system comes first");
        let now = now_secs();
        for s in sockets {
            let db = s["database"].as_str().unwrap();
            let ctx = format!("{} -> {} {db}: {s:#}", me.ip, peer.ip);
            assert_eq!(s["connected"], true, "{ctx}");
            assert_eq!(s["receiving"], true, "{ctx}");
            assert_eq!(s["sending"], true, "{ctx}");
            let latency = s["latency"].as_f64().expect("latency is a number");
            assert!((0.0..1000.0).contains(&latency), "{ctx}");
            let tid = s["thread_id"].as_u64().expect("thread_id is an integer");
            assert!(tid > 0, "{ctx}");
            assert!(
                s["nodes"].as_array().unwrap().contains(&json!(peer.ip)),
                "{ctx}"
            );
            for k in [
                "lastCommitConfirmed",
                "lastReceivedRemoteTime",
                "lastReceivedLocalTime",
                "lastSendTime",
            ] {
                // The system database arrived by a full copy (no transactions received), so
                // only dev, which saw transactions both ways, must have all four.
                let Some(v) = s[k].as_str() else {
                    assert_ne!(db, "dev", "{k} missing: {ctx}");
                    continue;
                };
                let t = parse_http_date(v).unwrap_or_else(|| panic!("{k} not an HTTP date: {ctx}"));
                assert!((now - t).abs() <= 60, "{k} = {v} is not recent: {ctx}");
            }
            let rv = s["lastReceivedVersion"]
                .as_f64()
                .expect("lastReceivedVersion");
            let received = s["recordsReceived"].as_u64().expect("recordsReceived");
            let sent = s["recordsSent"].as_u64().expect("recordsSent");
            if db == "dev" {
                assert!(
                    rv >= peer_txn,
                    "lastReceivedVersion {rv} < {peer_txn}: {ctx}"
                );
                assert!(received >= 1 && sent >= 1, "{ctx}");
            }
            assert!(s.get("lastConnectionError").is_none(), "{ctx}");
        }
    }

    // Super users only.
    a.ok(json!({"operation":"add_role","role":"plain","permission":{"super_user":false}}));
    a.ok(json!({"operation":"add_user","role":"plain","username":"plain_user","password":"pw","active":true}));
    let (s, r) = a.op_as("plain_user", "pw", json!({"operation":"cluster_status"}));
    assert_eq!(s, 403, "{r}");
    assert_eq!(
        r["unauthorized_access"],
        json!(["Operation 'clusterStatus' is restricted to 'super_user' roles"]),
        "{r}"
    );
    // The user replicated: B refuses it the same way.
    assert!(wait_until(T, || b
        .op_as("plain_user", "pw", json!({"operation":"cluster_status"}))
        .0
        == 403));
}

#[test]
fn add_node_validation_and_add_without_credentials() {
    let ip = ips(SUITE, 2);
    let nodes = start_all(&ip);
    let (a, b) = (&nodes[0], &nodes[1]);
    dog_tables(&[a, b]);
    let (s, r) = a.op(json!({"operation":"add_node","authorization":creds()}));
    assert_eq!(s, 400, "{r}");
    let (s, r) = a.op(json!({"operation":"add_node","hostname":"","authorization":creds()}));
    assert_eq!(s, 400, "{r}");
    // Nobody listens there: added here all the same, with the error; and it can be removed.
    let ghost = format!("{}.250", ip[0].rsplit_once('.').unwrap().0);
    let r = a.ok(json!({"operation":"add_node","hostname":ghost,"authorization":creds()}));
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("Successfully added '{ghost}' to cluster"))
            && msg.contains(" but there was an error updating target node"),
        "{r}"
    );
    assert!(peer_names(&status(a)).contains(&ghost));
    let r = a.ok(json!({"operation":"remove_node","hostname":ghost}));
    assert_eq!(
        r,
        json!({"message": format!("Successfully removed '{ghost}' from cluster")})
    );
    assert!(peer_names(&status(a)).is_empty());
    // B does not know A and no credentials are given: added here, B refuses (Harper's answer).
    let r = a.ok(json!({"operation":"add_node","hostname":b.ip}));
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("Successfully added '{}' to cluster", b.ip))
            && msg.contains(" but there was an error updating target node"),
        "{r}"
    );
    // A lists B but cannot connect: B refuses a node it does not know.
    assert!(
        wait_until(T, || {
            let st = status(a);
            socket(&st, &b.ip, "system")
                .is_some_and(|s| s["connected"] == false && s.get("lastConnectionError").is_some())
        }),
        "{}",
        dump(&[a, b])
    );
    assert!(
        peer_names(&status(b)).is_empty(),
        "B must not have learnt about A"
    );

    // Adding again, with an Authorization header string this time, links both ways.
    let r = a.ok(json!({"operation":"add_node","hostname":b.ip,"authorization":basic(USER, PASS)}));
    assert_eq!(
        r,
        json!({"message": format!("Successfully added '{}' to cluster", b.ip)})
    );
    wait_mesh(&[a, b], &["system", "dev"]);
    insert(b, json!([{"id":1}]));
    wait_converged(&[a, b], Some(1));
}

#[test]
fn a_node_restart_resumes_from_its_cursor_not_from_scratch() {
    let ip = ips(SUITE, 2);
    let mut nodes = mesh(&ip);
    for batch in 0..4usize {
        let recs: Vec<Value> = (0..250)
            .map(|i| json!({"id": batch * 250 + i, "batch": batch}))
            .collect();
        insert(&nodes[0], Value::Array(recs));
    }
    let recs: Vec<Value> = (0..200).map(|i| json!({"id": 5000 + i})).collect();
    insert(&nodes[1], Value::Array(recs));
    wait_converged(&refs(&nodes), Some(1200));
    let a_ip = ip[0].clone();
    let b_ip = ip[1].clone();
    let received = |n: &TestNode, peer: &str| {
        socket(&status(n), peer, "dev").and_then(|s| s["recordsReceived"].as_u64())
    };
    let sent = |n: &TestNode, peer: &str| {
        socket(&status(n), peer, "dev").and_then(|s| s["recordsSent"].as_u64())
    };
    assert!(received(&nodes[1], &a_ip).unwrap_or(0) >= 1000);

    // Clean restart of B, then kill -9 of B: each time only the new writes come over.
    for (round, kill) in [(0u64, false), (1, true)] {
        let sent_before = sent(&nodes[0], &b_ip).unwrap_or(0);
        if kill {
            nodes[1].kill9();
        } else {
            nodes[1].stop();
        }
        let base = 2000 + round * 10;
        let recs: Vec<Value> = (base..base + 5).map(|i| json!({"id": i})).collect();
        insert(&nodes[0], Value::Array(recs));
        nodes[1].start_again();
        wait_mesh(&refs(&nodes), &["system", "dev"]);
        let recs: Vec<Value> = (base + 5..base + 10).map(|i| json!({"id": i})).collect();
        insert(&nodes[0], Value::Array(recs));
        wait_converged(&refs(&nodes), Some(1200 + (round as usize + 1) * 10));
        let got = received(&nodes[1], &a_ip).unwrap_or(0);
        let sent_after = sent(&nodes[0], &b_ip).unwrap_or(0);
        assert!(
            got <= 50,
            "B received {got} records from A after restart {round}: a replay, not a resume\n{}",
            dump(&refs(&nodes))
        );
        assert!(
            sent_after - sent_before <= 50,
            "A sent {} records to B around restart {round}",
            sent_after - sent_before
        );
    }

    // Restart of A (the writer): neither direction starts over.
    let b_received_before = received(&nodes[1], &a_ip).unwrap_or(0);
    nodes[0].restart();
    wait_mesh(&refs(&nodes), &["system", "dev"]);
    insert(&nodes[0], json!([{"id": 3000}, {"id": 3001}]));
    insert(&nodes[1], json!([{"id": 3002}]));
    wait_converged(&refs(&nodes), Some(1223));
    let b_got = received(&nodes[1], &a_ip).unwrap_or(0) - b_received_before;
    let a_got = received(&nodes[0], &b_ip).unwrap_or(0);
    let a_sent = sent(&nodes[0], &b_ip).unwrap_or(0);
    assert!(
        b_got <= 50 && a_got <= 50 && a_sent <= 50,
        "after A restarted: B received {b_got}, A received {a_got}, A sent {a_sent}\n{}",
        dump(&refs(&nodes))
    );
}

#[test]
fn oversized_transaction_stops_the_stream_and_is_never_skipped() {
    // A's frames are limited to 100 kB (both what it sends and what it accepts); B has the
    // default. A transaction over the limit must hold back everything after it, never be
    // skipped while later ones get through.
    let ip = ips(SUITE, 2);
    let a = TestNode::start(
        &ip[0],
        &format!("{}  maxFrameSize: 100000\n", c::repl_yaml(&ip[0])),
    );
    let b = start(&ip[1]);
    dog_tables(&[&a, &b]);
    add_node(&a, &b.ip);
    wait_mesh(&[&a, &b], &["system", "dev"]);
    insert(&a, json!([{"id":"small-a"}]));
    insert(&b, json!([{"id":"small-b"}]));
    wait_converged(&[&a, &b], Some(2));

    let big = "x".repeat(300_000);
    insert(&a, json!([{"id":"big-a","blob":big}]));
    insert(&a, json!([{"id":"after-big-a"}]));
    insert(&b, json!([{"id":"big-b","blob":big}]));
    insert(&b, json!([{"id":"after-big-b"}]));
    assert!(
        holds_for(Duration::from_secs(3), || get(&b, "after-big-a").is_none()
            && get(&a, "after-big-b").is_none()),
        "a write after an oversized transaction got through: the big one was skipped"
    );
    // The big ones were not half-applied either.
    assert!(get(&b, "big-a").is_none() && get(&a, "big-b").is_none());
}
