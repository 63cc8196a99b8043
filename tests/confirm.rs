//! Issue 14 item 3 against real `skerry` processes (suite 34): confirm-on-commit. A record
//! write with `replicatedConfirmation: N` (or Harper's `X-Replicate-To: …;confirm=N` header) is
//! answered only once N peers committed it, so it is readable on them the moment the client
//! has the answer; short of N by `replication.confirmationTimeout`, the answer is Harper v5's
//! 504 and the write stays committed.
//!
//! Every wait is bounded; `holds_for` windows only check that something does *not* happen.

mod common;
use common::cluster::*;
use common::proxy::Proxy;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SUITE: u8 = 34;

/// Where a node's proxy listens (on the node's own address: a member must be reached at an
/// address its name resolves to).
const PROXY_PORT: u16 = 9940;

/// A replicating node with `confirmationTimeout` set; `url` makes peers dial a proxy.
fn yaml(ip: &str, timeout: &str, url: Option<&str>) -> String {
    let mut y = format!("{}  confirmationTimeout: {timeout}\n", repl_yaml(ip));
    if let Some(u) = url {
        y.push_str(&format!("  url: {u}\n"));
    }
    y
}

/// dev.dog on every node, then A adds the others and the mesh comes up.
fn link(nodes: &[&TestNode]) {
    for n in nodes {
        create_dog_table(n);
    }
    for n in &nodes[1..] {
        add_node(nodes[0], &n.ip);
    }
    wait_mesh(nodes, &["system", "dev"]);
}

/// An operation sent with extra request headers (`X-Replicate-To`).
fn op_with_headers(n: &TestNode, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nAuthorization: {}\r\n",
        n.addr(),
        body.len(),
        basic(USER, PASS)
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    match http_raw(&n.addr(), req.as_bytes(), Duration::from_secs(60)) {
        Ok((s, b)) => (s, serde_json::from_slice(&b).unwrap_or(Value::Null)),
        Err(e) => (0, json!({ "transport_error": e.to_string() })),
    }
}

fn timed_out(n: u64, received: u64, ms: u64) -> Value {
    json!({"error": format!(
        "Timed out after {ms}ms waiting for replication confirmation from {n} node(s) for database \"dev\" (received {received})"
    )})
}

fn get_dog(n: &TestNode, id: &str) -> Option<Value> {
    get(n, "dog", &json!(id))
}

/// Sends `body` (with `headers`) to `a` on another thread while every link out of `a` is
/// blackholed by `proxy`: the answer must not arrive while no peer can commit the write. Then
/// the proxy lets bytes through and the answer is returned.
fn answer_held_by_blackhole(
    a: &TestNode,
    proxy: &Proxy,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, Value) {
    proxy.blackhole(true);
    let (status, answered) = std::thread::scope(|s| {
        let h = s.spawn(|| op_with_headers(a, headers, &body));
        // Shorter than the ping timeout (2 s): the links stay up, only their bytes wait.
        let held = holds_for(Duration::from_millis(700), || !h.is_finished());
        proxy.blackhole(false);
        (held, h.join().unwrap())
    });
    assert!(
        status,
        "{body} was answered ({answered:?}) before any peer could have committed it"
    );
    answered
}

#[test]
fn a_confirmed_write_is_answered_before_the_peers_have_it() {
    // A is reached by its peers (which pull A's writes) only through a proxy that can hold the
    // bytes; A dials B and C directly.
    let ip = ips(SUITE, 3);
    let proxy = Proxy::start(
        &format!("{}:{PROXY_PORT}", ip[0]),
        &format!("{}:9933", ip[0]),
    );
    let url = format!("ws://{}:{PROXY_PORT}", ip[0]);
    let nodes = start_all_with(&ip, |i| {
        // Long enough that only a missing ack (not the timeout) could end a wait here.
        yaml(i, "30s", (i == ip[0]).then_some(url.as_str()))
    });
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    link(&[a, b, c]);

    let writes = [
        (
            json!({"operation":"insert","database":"dev","table":"dog","replicatedConfirmation":2,
                "records":[{"id":"d1","v":1}]}),
            "inserted 1 of 1 records",
            Some(json!(1)),
        ),
        (
            json!({"operation":"update","database":"dev","table":"dog","replicatedConfirmation":2,
                "records":[{"id":"d1","v":2}]}),
            "updated 1 of 1 records",
            Some(json!(2)),
        ),
        (
            json!({"operation":"upsert","database":"dev","table":"dog","replicatedConfirmation":2,
                "records":[{"id":"d1","v":3}]}),
            "upserted 1 of 1 records",
            Some(json!(3)),
        ),
        (
            json!({"operation":"delete","database":"dev","table":"dog","replicatedConfirmation":2,
                "ids":["d1"]}),
            "1 of 1 record successfully deleted",
            None,
        ),
    ];
    for (body, message, v) in writes {
        let t = Instant::now();
        let (s, r) = answer_held_by_blackhole(a, &proxy, &[], body.clone());
        assert_eq!(
            (s, r["message"].as_str()),
            (200, Some(message)),
            "{body} -> {r}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{body}: waited for the timeout"
        );
        // No waiting: the answer means both peers already committed it.
        for peer in [b, c] {
            assert_eq!(
                get_dog(peer, "d1").map(|r| r["v"].clone()),
                v,
                "{body} answered before {} committed it:\n{}",
                peer.ip,
                dump(&[a, b, c])
            );
        }
    }

    // The header form waits the same way.
    let (s, r) = answer_held_by_blackhole(
        a,
        &proxy,
        &[("X-Replicate-To", "2;confirm=2")],
        json!({"operation":"upsert","database":"dev","table":"dog","records":[{"id":"h1"}]}),
    );
    assert_eq!(s, 200, "{r}");
    for peer in [b, c] {
        assert!(
            get_dog(peer, "h1").is_some(),
            "header-confirmed write not on {}",
            peer.ip
        );
    }

    // Without a confirmation count nothing waits: the answer comes while the bytes are held.
    proxy.blackhole(true);
    let r = a.ok(
        json!({"operation":"upsert","database":"dev","table":"dog","records":[{"id":"plain"}]}),
    );
    let unseen = get_dog(b, "plain").is_none() && get_dog(c, "plain").is_none();
    proxy.blackhole(false);
    assert_eq!(r["message"], "upserted 1 of 1 records");
    assert!(
        unseen,
        "the blackhole leaked: the check above proves nothing"
    );
    wait_present(&[b, c], "dog", "plain");
}

#[test]
fn a_write_a_down_peer_cannot_confirm_answers_504_after_the_timeout_and_stays_committed() {
    let ip = ips(SUITE, 3);
    let mut nodes = start_all_with(&ip, |i| yaml(i, "1s", None));
    link(&refs(&nodes));
    nodes[2].kill9();
    let (a, b) = (&nodes[0], &nodes[1]);

    let t = Instant::now();
    let (s, r) = a.op(json!({"operation":"upsert","database":"dev","table":"dog",
        "replicatedConfirmation":2,"records":[{"id":"k1","v":1}]}));
    let took = t.elapsed();
    assert_eq!((s, r), (504, timed_out(2, 1, 1000)));
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(10),
        "answered after {took:?}, not after confirmationTimeout (1 s)"
    );
    // Committed locally (and replicated to the live peer) all the same.
    assert_eq!(get_dog(a, "k1").map(|r| r["v"].clone()), Some(json!(1)));
    wait_present(&[b], "dog", "k1");

    // The header form waits and times out the same way.
    let (s, r) = op_with_headers(
        a,
        &[("X-Replicate-To", "2;confirm=2")],
        &json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":"k2"}]}),
    );
    assert_eq!((s, r), (504, timed_out(2, 1, 1000)));
    assert!(get_dog(a, "k2").is_some());

    // More than there are peers: waits out the timeout too (Harper v5 refuses up front).
    let (s, r) = a.op(json!({"operation":"delete","database":"dev","table":"dog",
        "replicatedConfirmation":5,"ids":["k2"]}));
    assert_eq!((s, r), (504, timed_out(5, 1, 1000)));
    assert!(get_dog(a, "k2").is_none(), "the delete is committed");

    // As many as are up: answered, and on that peer.
    let t = Instant::now();
    let (s, r) = a.op(json!({"operation":"update","database":"dev","table":"dog",
        "replicatedConfirmation":1,"records":[{"id":"k1","v":2}]}));
    assert_eq!(
        (s, r["message"].clone()),
        (200, json!("updated 1 of 1 records"))
    );
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "waited for the timeout"
    );
    assert_eq!(get_dog(b, "k1").map(|r| r["v"].clone()), Some(json!(2)));

    // A request that wrote nothing has nothing to confirm: answered at once.
    let t = Instant::now();
    let (s, r) = a.op(json!({"operation":"insert","database":"dev","table":"dog",
        "replicatedConfirmation":2,"records":[{"id":"k1"}]}));
    assert_eq!(
        (s, r["message"].clone()),
        (200, json!("inserted 0 of 1 records"))
    );
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "a no-op write waited"
    );
}

#[test]
fn replicated_confirmation_that_is_not_a_non_negative_integer_is_refused_before_writing() {
    let ip = ips(SUITE, 1);
    let a = TestNode::start(&ip[0], &yaml(&ip[0], "1s", None));
    create_dog_table(&a);
    let bad = json!({"error": "'replicatedConfirmation' must be a non-negative integer"});
    for (i, n) in [json!(-1), json!(1.5), json!("2"), json!(true), json!([2])]
        .into_iter()
        .enumerate()
    {
        let id = format!("bad{i}");
        let (s, r) = a.op(json!({"operation":"upsert","database":"dev","table":"dog",
            "replicatedConfirmation":n,"records":[{"id":id}]}));
        assert_eq!((s, &r), (400, &bad), "replicatedConfirmation {n}");
        assert!(get_dog(&a, &id).is_none(), "{n}: written despite the 400");
    }
    for h in ["2;confirm=x", "2;confirm=-1", "2; confirm="] {
        let (s, r) = op_with_headers(
            &a,
            &[("X-Replicate-To", h)],
            &json!({"operation":"upsert","database":"dev","table":"dog","records":[{"id":"hdr"}]}),
        );
        assert_eq!(
            (s, r),
            (
                400,
                json!({"error": "X-Replicate-To: 'confirm' must be a non-negative integer"})
            ),
            "X-Replicate-To: {h}"
        );
        assert!(get_dog(&a, "hdr").is_none(), "{h}: written despite the 400");
    }
    // 0, null and a header without `confirm` ask for nothing.
    a.ok(json!({"operation":"upsert","database":"dev","table":"dog","replicatedConfirmation":0,"records":[{"id":"z0"}]}));
    a.ok(json!({"operation":"upsert","database":"dev","table":"dog","replicatedConfirmation":null,"records":[{"id":"z1"}]}));
    let (s, _) = op_with_headers(
        &a,
        &[("X-Replicate-To", "2")],
        &json!({"operation":"upsert","database":"dev","table":"dog","records":[{"id":"z2"}]}),
    );
    assert_eq!(s, 200);
    // A node without peers cannot be confirmed by anyone: the timeout answer.
    let (s, r) = a.op(json!({"operation":"upsert","database":"dev","table":"dog",
        "replicatedConfirmation":1,"records":[{"id":"alone"}]}));
    assert_eq!((s, r), (504, timed_out(1, 0, 1000)));
    assert!(get_dog(&a, "alone").is_some());
}

#[test]
fn a_node_without_replication_refuses_a_confirmation_count_with_harpers_400() {
    let ip = ips(SUITE, 1);
    let a = TestNode::start(&ip[0], "");
    create_dog_table(&a);
    let (s, r) = a.op(json!({"operation":"insert","database":"dev","table":"dog",
        "replicatedConfirmation":1,"records":[{"id":"solo"}]}));
    assert_eq!(
        (s, r),
        (
            400,
            json!({"error": "Cannot confirm replication to more nodes (1) than this node replicates database \"dev\" to (0 node(s))"})
        )
    );
    assert!(get_dog(&a, "solo").is_none(), "written despite the 400");
}
