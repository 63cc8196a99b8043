//! Issue 14 against real `skerry` processes (suite 32): membership validation and
//! responsiveness (hostnames that are neither DNS names nor IP literals are refused with
//! nothing stored; a registration dials at once instead of waiting out a back-off; every live
//! link reports its latency) and `remove_node` of peers known by a route.
//!
//! Every wait is bounded; `holds_for` windows only check that something does *not* happen.

mod common;
use common::cluster::*;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SUITE: u8 = 32;

/// A replicating node with a default ping interval (30 s): what an operator runs.
fn yaml_default_pings(ip: &str) -> String {
    format!("replication:\n  hostname: {ip}\n  port: \"{ip}:9933\"\n")
}

/// A replicating node that dials `routes` from its config file.
fn yaml_with_routes(ip: &str, routes: &[&str]) -> String {
    let mut y = format!("{}  routes:\n", repl_yaml(ip));
    for r in routes {
        y.push_str(&format!("    - {r}\n"));
    }
    y
}

fn node_rows(n: &TestNode) -> Value {
    n.ok(
        json!({"operation":"search_by_value","database":"system","table":"hdb_nodes",
        "search_attribute":"name","search_value":"*","get_attributes":["name"]}),
    )
}

fn routes(n: &TestNode) -> Value {
    n.ok(json!({"operation":"cluster_get_routes"}))
}

// ---------------------------------------------------------------------------------------------
// Item 7: hostnames
// ---------------------------------------------------------------------------------------------

#[test]
fn add_node_update_node_and_configure_cluster_refuse_a_hostname_that_is_not_a_dns_name_or_ip() {
    let ip = ips(SUITE, 1);
    let a = start_repl(&ip[0]);
    let good = ghost(&ip[0]);
    let bad_host = json!({"error": "'hostname' must be a DNS name or an IP address, received \"not a host!!\""});
    for op in ["add_node", "update_node"] {
        let (s, r) = a.op(
            json!({"operation":op,"hostname":"not a host!!","authorization":creds(),"verify_tls":false}),
        );
        assert_eq!((s, &r), (400, &bad_host), "{op}");
    }
    let (s, r) = a.op(json!({"operation":"add_node","url":"ws://bad_host!:9933"}));
    assert_eq!(
        (s, r),
        (
            400,
            json!({"error": "'url' must name a DNS host or an IP address, received \"ws://bad_host!:9933\""})
        )
    );
    // A hostname with a valid url is still checked as a hostname.
    let (s, r) =
        a.op(json!({"operation":"add_node","hostname":"a b","url":format!("ws://{good}:9933")}));
    assert_eq!(
        (s, r),
        (
            400,
            json!({"error": "'hostname' must be a DNS name or an IP address, received \"a b\""})
        )
    );
    // configure_cluster validates every connection before changing anything: the valid one
    // listed first is not stored either.
    let (s, r) = a.op(json!({"operation":"configure_cluster","connections":[
        {"hostname": good, "authorization": creds()},
        {"hostname": "not a host!!", "authorization": creds()}]}));
    assert_eq!(
        (s, r),
        (
            400,
            json!({"error": "connections[1]: 'hostname' must be a DNS name or an IP address, received \"not a host!!\""})
        )
    );
    assert_eq!(node_rows(&a), json!([]), "nothing may be stored");
    assert_eq!(status(&a)["connections"], json!([]));
    // IPv6 literals and DNS names pass the check (the unreachable peer is reported, as Harper
    // does, in a 200 answer).
    for host in ["::1", "peer-1.example.invalid"] {
        let (s, r) = a.op(json!({"operation":"add_node","hostname":host,
            "url": format!("ws://{good}:9933"), "authorization":creds()}));
        assert_eq!(s, 200, "{host}: {r}");
    }
}

// ---------------------------------------------------------------------------------------------
// Item 7: responsiveness
// ---------------------------------------------------------------------------------------------

#[test]
fn a_registration_dials_at_once_instead_of_waiting_out_the_backoff_grown_while_refused() {
    registration_dials_at_once(|a, b| add_node(a, &b.ip));
}

#[test]
fn configure_cluster_dials_at_once_instead_of_waiting_out_the_backoff_grown_while_refused() {
    registration_dials_at_once(|a, b| {
        let r = a.ok(json!({"operation":"configure_cluster","connections":[
            {"hostname": b.ip, "authorization": creds()}]}));
        assert_eq!(r["message"], "Cluster successfully configured.", "{r}");
    });
}

/// B dials A from a route while A refuses it (A does not know B); then `register` makes A
/// and B members of each other: data must flow both ways at once, not after B's back-off.
fn registration_dials_at_once(register: impl Fn(&TestNode, &TestNode)) {
    let ip = ips(SUITE, 2);
    // B dials A from its routes; A does not know B and refuses it, so B's back-off grows.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start_repl(&ip[0]));
        let b = s.spawn(|| TestNode::start(&ip[1], &yaml_with_routes(&ip[1], &[&ip[0]])));
        (a.join().unwrap(), b.join().unwrap())
    });
    for n in [&a, &b] {
        create_table(n, "dog");
    }
    // Also lets B's reconnect back-off grow to 8 s (0.5, 1, 2, 4, 8): without the fix the
    // registration below waits it out.
    assert!(
        holds_for(Duration::from_secs(9), || !link_up(
            &status(&b),
            &a.ip,
            &["dev"]
        )),
        "A accepted B before knowing it:\n{}",
        dump(&[&a, &b])
    );
    register(&a, &b);
    let registered = Instant::now();
    put(&b, "dog", "from-b");
    put(&a, "dog", "from-a");
    let both = wait_until(Duration::from_secs(3), || {
        has(&a, "dog", "from-b") && has(&b, "dog", "from-a")
    });
    assert!(
        both,
        "data did not flow both ways within 3 s of add_node (took {:?}):\n{}",
        registered.elapsed(),
        dump(&[&a, &b])
    );
}

#[test]
fn every_live_link_reports_its_latency_without_waiting_a_ping_interval() {
    let ip = ips(SUITE, 3);
    let nodes = start_all_with(&ip, yaml_default_pings);
    add_node(&nodes[0], &nodes[1].ip);
    add_node(&nodes[0], &nodes[2].ip);
    add_node(&nodes[1], &nodes[2].ip);
    let r = refs(&nodes);
    wait_mesh(&r, &["system"]);
    // The default ping interval is 30 s: a link that waited for it showed `latency: null`.
    let all_measured = || {
        nodes.iter().all(|n| {
            let st = status(n);
            st["connections"].as_array().is_some_and(|cs| {
                cs.iter().all(|c| {
                    c["database_sockets"].as_array().is_some_and(|ss| {
                        ss.iter().all(|s| {
                            s["connected"] != true || s["latency"].as_f64().is_some_and(|l| l > 0.0)
                        })
                    })
                })
            })
        })
    };
    assert!(
        wait_until(Duration::from_secs(5), all_measured),
        "a live link reports no latency:\n{}",
        dump(&r)
    );
}

// ---------------------------------------------------------------------------------------------
// Item 4: remove_node of route peers
// ---------------------------------------------------------------------------------------------

#[test]
fn remove_node_of_a_peer_known_only_by_a_route_disconnects_it_and_drops_the_route() {
    let ip = ips(SUITE, 2);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| TestNode::start(&ip[0], &yaml_with_routes(&ip[0], &[&ip[1]])));
        let b = s.spawn(|| TestNode::start(&ip[1], &yaml_with_routes(&ip[1], &[&ip[0]])));
        (a.join().unwrap(), b.join().unwrap())
    });
    create_table(&a, "dog");
    wait_table(&[&b], "dog");
    wait_link(&a, &b.ip, &["dev"]);
    put(&b, "dog", "before");
    wait_present(&[&a], "dog", "before");
    assert_eq!(node_rows(&a), json!([]), "B is a member by its route only");

    let r = a.ok(json!({"operation":"remove_node","hostname":b.ip}));
    assert_eq!(
        r,
        json!({"message": format!("Successfully removed '{}' from cluster: removed its route in replication.routes (it had no hdb_nodes record)", b.ip)})
    );
    assert_eq!(routes(&a), json!([]));
    let (text, cfg) = read_config(&a);
    assert!(
        cfg["replication"]["routes"]
            .as_array()
            .is_none_or(|r| r.is_empty()),
        "the route is still in the config file:\n{text}"
    );
    assert!(peer_names(&status(&a)).is_empty(), "{}", dump(&[&a, &b]));
    // Disconnected both ways: B keeps dialling A from its own route, and A refuses it.
    put(&b, "dog", "after-b");
    put(&a, "dog", "after-a");
    assert!(
        holds_for(Duration::from_secs(3), || !has(&a, "dog", "after-b")
            && !has(&b, "dog", "after-a")),
        "data still flows after remove_node:\n{}",
        dump(&[&a, &b])
    );
    // A second removal: nothing left of it.
    let (s, r) = a.op(json!({"operation":"remove_node","hostname":b.ip}));
    assert_eq!(
        (s, r),
        (400, json!({"error": format!("{} does not exist", b.ip)}))
    );
}

#[test]
fn remove_node_of_a_peer_with_a_record_and_a_route_removes_both_so_it_does_not_stay_a_member() {
    let ip = ips(SUITE, 2);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| TestNode::start(&ip[0], &yaml_with_routes(&ip[0], &[&ip[1]])));
        let b = s.spawn(|| start_repl(&ip[1]));
        (a.join().unwrap(), b.join().unwrap())
    });
    add_node(&a, &b.ip);
    wait_link(&a, &b.ip, &["system"]);
    let r = a.ok(json!({"operation":"remove_node","hostname":b.ip}));
    assert_eq!(
        r,
        json!({"message": format!("Successfully removed '{}' from cluster: removed its hdb_nodes record and its route in replication.routes", b.ip)})
    );
    assert_eq!(routes(&a), json!([]));
    assert!(
        peer_names(&status(&a)).is_empty(),
        "B is still a member:\n{}",
        dump(&[&a, &b])
    );
    // The normal case keeps Harper's message.
    let ip2 = ips(SUITE, 1);
    let c = start_repl(&ip2[0]);
    add_node(&a, &c.ip);
    let r = a.ok(json!({"operation":"remove_node","hostname":c.ip}));
    assert_eq!(
        r,
        json!({"message": format!("Successfully removed '{}' from cluster", c.ip)})
    );
}

// ---------------------------------------------------------------------------------------------
// Item 5: table expiration
// ---------------------------------------------------------------------------------------------

fn search_all(n: &TestNode, table: &str) -> Value {
    n.ok(
        json!({"operation":"search_by_value","database":"dev","table":table,
        "search_attribute":"id","search_value":"*","get_attributes":["id"]}),
    )
}

fn by_id(n: &TestNode, table: &str, id: &str) -> Value {
    n.ok(
        json!({"operation":"search_by_id","database":"dev","table":table,
        "ids":[id],"get_attributes":["id"]}),
    )
}

#[test]
fn expired_records_are_never_returned_and_are_evicted_locally_on_every_node_without_a_replicated_delete(
) {
    let ip = ips(SUITE, 2);
    let nodes = start_all(&ip);
    let (a, b) = (&nodes[0], &nodes[1]);
    add_node(a, &b.ip);
    wait_mesh(&[a, b], &["system"]);
    a.ok(
        json!({"operation":"create_table","database":"dev","table":"ttl",
        "primary_key":"id","expiration":2}),
    );
    wait_table(&[b], "ttl");
    for n in [a, b] {
        let d = n.ok(json!({"operation":"describe_table","database":"dev","table":"ttl"}));
        assert_eq!(d["expiration"], json!(2), "describe_table on {}: {d}", n.ip);
    }
    put(a, "ttl", "short");
    wait_present(&[b], "ttl", "short");
    assert_eq!(by_id(a, "ttl", "short"), json!([{"id":"short"}]));
    // Gone from every read on both nodes, then evicted from storage (record_count counts
    // stored records) by each node's own sweep.
    let gone = |n: &TestNode| {
        by_id(n, "ttl", "short") == json!([])
            && search_all(n, "ttl") == json!([])
            && record_count(n, "ttl") == Some(0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || gone(a) && gone(b)),
        "the expired record is still there:\n{}",
        dump(&[a, b])
    );
    // The eviction is local: no delete was logged (so none replicated).
    for n in [a, b] {
        let ops: Vec<Value> = audit_log(n, "ttl")
            .iter()
            .map(|e| e["operation"].clone())
            .collect();
        assert!(
            !ops.contains(&json!("delete")),
            "an eviction was logged as a delete on {}: {ops:?}",
            n.ip
        );
    }
    // A newer write of the same key is not fought by the eviction: it is back on both nodes.
    put(b, "ttl", "short");
    wait_present(&[a, b], "ttl", "short");
}

#[test]
fn each_node_judges_expiry_by_its_own_clock_and_a_skewed_node_never_fights_newer_writes() {
    // B's clock runs 20 s ahead of A's (a test-only skew of its process clock). Once they
    // exchange writes, A's hybrid clock follows B's, so records carry B's time: with a 10 s
    // expiration B stops returning a record after 10 s while A, 20 s behind, keeps it for 30 s.
    // Each node evicts by its own clock, never through a replicated delete, so a newer write of
    // the key made on B after B evicted it is applied everywhere.
    let ip = ips(SUITE, 2);
    let a = start_repl(&ip[0]);
    let b = TestNode::start_with_env(
        &ip[1],
        &repl_yaml(&ip[1]),
        &[("SKERRY_TEST_CLOCK_OFFSET_MS", "20000")],
    );
    add_node(&a, &b.ip);
    wait_mesh(&[&a, &b], &["system"]);
    a.ok(
        json!({"operation":"create_table","database":"dev","table":"skew",
        "primary_key":"id","expiration":10}),
    );
    wait_table(&[&b], "skew");
    put(&a, "skew", "k");
    wait_present(&[&b], "skew", "k");
    assert!(
        wait_until(Duration::from_secs(20), || by_id(&b, "skew", "k")
            == json!([])),
        "B never expired the record:\n{}",
        dump(&[&a, &b])
    );
    // By A's clock the record is still young: A went by its own clock, not B's eviction.
    assert_eq!(
        by_id(&a, "skew", "k"),
        json!([{"id":"k"}]),
        "A followed B's eviction"
    );
    // A newer write of the key on B is applied on both, not fought by either eviction.
    b.ok(json!({"operation":"upsert","database":"dev","table":"skew",
        "records":[{"id":"k","again":true}]}));
    assert_eq!(by_id(&b, "skew", "k"), json!([{"id":"k"}]));
    assert!(
        wait_until(Duration::from_secs(10), || a.ok(
            json!({"operation":"search_by_id","database":"dev","table":"skew",
                "ids":["k"],"get_attributes":["again"]})
        ) == json!([{"again":true}])),
        "B's newer write did not reach A:\n{}",
        dump(&[&a, &b])
    );
    for n in [&a, &b] {
        let ops: Vec<Value> = audit_log(n, "skew")
            .iter()
            .map(|e| e["operation"].clone())
            .collect();
        assert!(
            !ops.contains(&json!("delete")),
            "a delete was logged on {}: {ops:?}",
            n.ip
        );
    }
}

#[test]
fn create_table_refuses_an_expiration_that_is_not_a_positive_whole_number_of_seconds() {
    let ip = ips(SUITE, 1);
    let n = start_repl(&ip[0]);
    for bad in [json!(-1), json!(0), json!("10"), json!(1.5)] {
        let (s, r) = n.op(
            json!({"operation":"create_table","database":"dev","table":"t",
            "primary_key":"id","expiration":bad}),
        );
        assert_eq!(
            (s, r),
            (
                400,
                json!({"error": format!("'expiration' must be a whole number of seconds from 1 to 4294967295, received {bad}")})
            ),
            "{bad}"
        );
    }
    let (s, _) = n.op(json!({"operation":"describe_table","database":"dev","table":"t"}));
    assert_eq!(s, 404, "nothing may be created");
    // Without it, describe_table has no `expiration` key.
    create_table(&n, "plain");
    let d = n.ok(json!({"operation":"describe_table","database":"dev","table":"plain"}));
    assert!(d.get("expiration").is_none(), "{d}");
}

#[test]
fn table_expiration_survives_a_restart() {
    let ip = ips(SUITE, 1);
    let mut n = start_repl(&ip[0]);
    n.ok(
        json!({"operation":"create_table","database":"dev","table":"ttl",
        "primary_key":"id","expiration":3600}),
    );
    n.restart();
    let d = n.ok(json!({"operation":"describe_table","database":"dev","table":"ttl"}));
    assert_eq!(d["expiration"], json!(3600), "{d}");
}
