//! Cluster operations against real `skerry` processes (suite 40): the answers of add_node,
//! update_node, remove_node, configure_cluster and the three routes operations (status and
//! shape, error cases included) compared with the seed page (../shared/spec/seed-clustering.md)
//! and the captured Harper 4.7.29 pairs (../shared/spec/harper-live/*.json); routes persisted
//! in config.yaml and applied live; configure_cluster replacing the membership.
//!
//! Where Skerry deliberately differs from the capture, the assertion follows Skerry's
//! documented behaviour and a comment names the capture it corresponds to. Every wait is
//! bounded; `holds_for` windows only check that something does *not* happen.

mod common;
use common::cluster::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const SUITE: u8 = 40;

fn err(msg: &str) -> Value {
    json!({ "error": msg })
}

/// `(status, body)` of an operation that must fail with 400 and exactly `msg`.
fn assert_400(n: &TestNode, body: Value, msg: &str) {
    let (s, r) = n.op(body.clone());
    assert_eq!((s, &r), (400, &err(msg)), "{body}");
}

fn routes(n: &TestNode) -> Value {
    n.ok(json!({"operation":"cluster_get_routes"}))
}

/// `127.<suite>.<k>.<last>`: with `last` above 240 no test node ever listens there (the
/// harness hands out 1..=240).
fn addr_in(ip: &str, last: u8) -> String {
    format!("{}.{last}", ip.rsplit_once('.').unwrap().0)
}

// ---------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------

#[test]
fn routes_ops_answer_in_the_seed_shapes_and_compare_routes_by_host_and_port() {
    let ip = ips(SUITE, 1);
    let n = start_repl(&ip[0]);
    let (h2, h3, h4, h9) = (
        addr_in(&ip[0], 241),
        addr_in(&ip[0], 242),
        addr_in(&ip[0], 243),
        addr_in(&ip[0], 244),
    );
    // capture cluster_get_routes_empty.
    assert_eq!(routes(&n), json!([]));

    // capture cluster_set_routes (and the seed's example): a string and a {hostname, port}.
    let r =
        n.ok(json!({"operation":"cluster_set_routes","routes":[h2, {"hostname":h3,"port":9933}]}));
    assert_eq!(
        r,
        json!({"message":"cluster routes successfully set",
               "set":[h2, {"hostname":h3,"port":9933}], "skipped":[]})
    );
    // capture cluster_get_routes_after_set answers [] (Harper reads its startup config);
    // Skerry answers the routes it now uses, in the form they were given (seed: "the raw array").
    assert_eq!(routes(&n), json!([h2, {"hostname":h3,"port":9933}]));

    // capture cluster_set_routes_more: Harper skips nothing (it compares with its startup
    // routes). Skerry compares by host and port whatever the form: both are already there.
    let r =
        n.ok(json!({"operation":"cluster_set_routes","routes":[format!("ws://{h2}:9933"), h2]}));
    assert_eq!(
        r,
        json!({"message":"cluster routes successfully set","set":[],
               "skipped":[format!("ws://{h2}:9933"), h2]})
    );
    // capture cluster_set_routes_duplicate: Harper sets {host: h3, port} next to
    // {hostname: h3, port}; for Skerry they are the same route, as are "h3:9933" and {hostname}.
    let dup = json!([format!("{h3}:9933"), {"host":h3,"port":9933}, {"hostname":h3}, {"hostname":h3,"port":"9933"}]);
    let r = n.ok(json!({"operation":"cluster_set_routes","routes":dup}));
    assert_eq!(
        r,
        json!({"message":"cluster routes successfully set","set":[],"skipped":dup})
    );
    // Same host on another port is another route; two objects with the same port and different
    // hostnames are two routes (Harper's comparison would call them equal); a route repeated in
    // one request is set once.
    let r = n.ok(json!({"operation":"cluster_set_routes","routes":[
        {"hostname":h3,"port":9940}, {"hostname":h4,"port":9940},
        format!("ws://{h4}:9941"), format!("ws://{h4}:9941")]}));
    assert_eq!(
        r,
        json!({"message":"cluster routes successfully set",
               "set":[{"hostname":h3,"port":9940}, {"hostname":h4,"port":9940}, format!("ws://{h4}:9941")],
               "skipped":[format!("ws://{h4}:9941")]})
    );
    assert_eq!(
        routes(&n),
        json!([h2, {"hostname":h3,"port":9933}, {"hostname":h3,"port":9940},
               {"hostname":h4,"port":9940}, format!("ws://{h4}:9941")])
    );

    // capture cluster_delete_routes: `deleted` = the removed entries; Harper's `skipped` lists
    // the routes it KEPT, Skerry's lists the requested routes that matched nothing (the seed's
    // wording), so it is empty here.
    let r =
        n.ok(json!({"operation":"cluster_delete_routes","routes":[{"hostname":h3,"port":9933}]}));
    assert_eq!(
        r,
        json!({"message":"cluster routes successfully deleted",
               "deleted":[{"hostname":h3,"port":9933}],"skipped":[]})
    );
    // capture cluster_delete_routes_string; here in another form than the stored one: the
    // stored entry is what `deleted` shows.
    let r = n.ok(json!({"operation":"cluster_delete_routes","routes":[format!("ws://{h2}:9933")]}));
    assert_eq!(
        r,
        json!({"message":"cluster routes successfully deleted","deleted":[h2],"skipped":[]})
    );
    // capture cluster_delete_routes_unknown: 200 with deleted [] (Harper's skipped = the kept
    // routes; Skerry's = the unmatched request).
    let r = n.ok(json!({"operation":"cluster_delete_routes","routes":[{"hostname":h9,"port":1}]}));
    assert_eq!(
        r,
        json!({"message":"cluster routes successfully deleted","deleted":[],
               "skipped":[{"hostname":h9,"port":1}]})
    );
    let r =
        n.ok(json!({"operation":"cluster_delete_routes","routes":[{"host":h4,"port":9940}, h2]}));
    assert_eq!(
        r,
        json!({"message":"cluster routes successfully deleted",
               "deleted":[{"hostname":h4,"port":9940}],"skipped":[h2]})
    );
    // capture cluster_get_routes_after_delete (Harper resurrects earlier deletions; not Skerry).
    assert_eq!(
        routes(&n),
        json!([{"hostname":h3,"port":9940}, format!("ws://{h4}:9941")])
    );
}

#[test]
fn routes_ops_reject_missing_and_ill_typed_routes_naming_the_field_and_change_nothing() {
    let ip = ips(SUITE, 1);
    let n = start_repl(&ip[0]);
    let h2 = addr_in(&ip[0], 241);
    n.ok(json!({"operation":"cluster_set_routes","routes":[h2]}));
    let (file_before, _) = read_config(&n);
    let h6 = addr_in(&ip[0], 245);
    for op in ["cluster_set_routes", "cluster_delete_routes"] {
        // captures cluster_set_routes_missing_routes, cluster_delete_routes_missing_routes.
        assert_400(&n, json!({"operation":op}), "'routes' is required");
        assert_400(
            &n,
            json!({"operation":op,"routes":null}),
            "'routes' is required",
        );
        // capture cluster_set_routes_not_array.
        assert_400(
            &n,
            json!({"operation":op,"routes":h6}),
            "'routes' must be one of [array]",
        );
        assert_400(
            &n,
            json!({"operation":op,"routes":{"hostname":h6}}),
            "'routes' must be one of [array]",
        );
        // Item errors name the item and the field; a valid item before a bad one is not applied.
        let cases = [
            (
                json!([h6, {"hostname":h6,"port":"x"}]),
                "'routes[1].port' must be a port number",
            ),
            (
                json!([{"hostname":h6,"port":70000}]),
                "'routes[0].port' must be a port number",
            ),
            (json!([5]), "'routes[0]' must be a string or an object"),
            (json!([{"port":9933}]), "'routes[0].hostname' is required"),
            (
                json!([{"hostname":5}]),
                "'routes[0].hostname' must be a string",
            ),
            (
                json!([""]),
                "'routes[0]' must be a host name, host:port or ws(s)://host:port, got ''",
            ),
            (
                json!([{"hostname":h6,"replicates":"yes"}]),
                "'routes[0].replicates' must be a boolean or an object with sends and receives",
            ),
            (
                json!([{"hostname":h6,"subscriptions":[{"database":"dev"}]}]),
                "'routes[0].subscriptions[0].table' is required",
            ),
            (
                json!([{"hostname":h6,"subscriptions":"dev.dog"}]),
                "'routes[0].subscriptions' must be an array",
            ),
        ];
        for (rs, msg) in cases {
            assert_400(&n, json!({"operation":op,"routes":rs}), msg);
        }
    }
    assert_eq!(
        routes(&n),
        json!([h2]),
        "a refused request changed the routes"
    );
    let (file_after, _) = read_config(&n);
    assert_eq!(
        file_after, file_before,
        "a refused request rewrote config.yaml"
    );
}

#[test]
fn routes_are_persisted_in_config_yaml_keeping_other_keys_and_comments_and_reload_after_restart() {
    let ip = ips(SUITE, 1);
    let me = &ip[0];
    let (g1, g2, g3) = (addr_in(me, 241), addr_in(me, 242), addr_in(me, 243));
    let yaml = format!(
        "# operator note: keep this comment\nreplication:\n  hostname: {me}\n  port: \"{me}:9933\"\n  # tuning below, keep me too\n  pingInterval: 1s   # fast pings\n  databases: '*'\n  routes:\n    - {g1}\n  pingTimeout: 3s\n"
    );
    let mut n = TestNode::start(me, &yaml);
    let (text0, cfg0) = read_config(&n);
    // A route from the file at start.
    assert_eq!(routes(&n), json!([g1]));

    n.ok(json!({"operation":"cluster_set_routes","routes":[{"hostname":g2,"port":9933}, format!("ws://{g3}:9933")]}));
    let expect = json!([g1, {"hostname":g2,"port":9933}, format!("ws://{g3}:9933")]);
    assert_eq!(routes(&n), expect);
    let check_file = |n: &TestNode, want: &Value| {
        let (text, cfg) = read_config(n);
        assert_eq!(
            &cfg["replication"]["routes"], want,
            "replication.routes in the file:\n{text}"
        );
        // Every other key is untouched.
        let (mut a, mut b) = (cfg0.clone(), cfg.clone());
        a["replication"].as_object_mut().unwrap().remove("routes");
        b["replication"].as_object_mut().unwrap().remove("routes");
        assert_eq!(a, b, "keys other than routes changed:\n{text}");
        // Every line outside the routes list is kept byte for byte, in order.
        let outside: Vec<&str> = text0
            .lines()
            .filter(|l| !l.starts_with("  routes:") && !l.starts_with("    - "))
            .collect();
        let mut it = text.lines();
        for line in &outside {
            assert!(
                it.any(|l| l == *line),
                "line {line:?} lost or moved; file now:\n{text}"
            );
        }
        assert!(text.contains("# operator note: keep this comment"));
        assert!(text.contains("# fast pings"));
        // Atomic rewrite: no temporary file left beside it.
        let leftovers: Vec<_> = std::fs::read_dir(&n.dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|f| f.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    };
    check_file(&n, &expect);

    n.restart();
    assert_eq!(routes(&n), expect, "routes after restart");

    let r = n.ok(json!({"operation":"cluster_delete_routes","routes":[g1, {"hostname":g3}]}));
    assert_eq!(r["deleted"], json!([g1, format!("ws://{g3}:9933")]), "{r}");
    let expect = json!([{"hostname":g2,"port":9933}]);
    check_file(&n, &expect);
    n.restart();
    assert_eq!(routes(&n), expect, "routes after the second restart");

    // Deleting the last route leaves an empty list, which restarts as none.
    n.ok(json!({"operation":"cluster_delete_routes","routes":[g2]}));
    let (text, cfg) = read_config(&n);
    assert!(
        cfg["replication"]["routes"] == json!([]) || cfg["replication"]["routes"].is_null(),
        "{text}"
    );
    n.restart();
    assert_eq!(routes(&n), json!([]));
}

#[test]
fn route_set_on_both_nodes_connects_live_and_deleting_it_drops_the_link_live() {
    let ip = ips(SUITE, 2);
    let nodes = start_all(&ip);
    let (a, b) = (&nodes[0], &nodes[1]);
    // Each lists the other: both accept the dialer (no add_node, no restart).
    a.ok(json!({"operation":"cluster_set_routes","routes":[b.ip]}));
    b.ok(json!({"operation":"cluster_set_routes","routes":[format!("ws://{}:9933", a.ip)]}));
    wait_mesh(&[a, b], &["system"]);
    create_table(a, "dog");
    wait_table(&[a, b], "dog");
    wait_mesh(&[a, b], &["system", "dev"]);
    put(a, "dog", "from-a");
    put(b, "dog", "from-b");
    wait_converged(&[a, b], "dog", Some(2), T);

    // Deleting the route on A alone drops the link both ways: A neither dials B nor accepts it.
    let r = a.ok(json!({"operation":"cluster_delete_routes","routes":[b.ip]}));
    assert_eq!(r["deleted"], json!([b.ip]), "{r}");
    assert!(
        wait_until(T, || !peer_names(&status(a)).contains(&b.ip)),
        "A still lists B after deleting its route:\n{}",
        dump(&[a, b])
    );
    assert!(
        wait_until(T, || socket(&status(b), &a.ip, "dev")
            .is_some_and(|s| s["connected"] == false)),
        "B still shows A connected:\n{}",
        dump(&[a, b])
    );
    put(a, "dog", "a-after-delete");
    put(b, "dog", "b-after-delete");
    assert!(
        holds_for(Duration::from_secs(2), || !has(b, "dog", "a-after-delete")
            && !has(a, "dog", "b-after-delete")),
        "writes still flow after cluster_delete_routes:\n{}",
        dump(&[a, b])
    );

    // Setting it again reconnects without a restart, and the writes made meanwhile catch up.
    a.ok(json!({"operation":"cluster_set_routes","routes":[{"hostname":b.ip,"port":9933}]}));
    wait_mesh(&[a, b], &["system", "dev"]);
    wait_converged(&[a, b], "dog", Some(4), T);
}

// ---------------------------------------------------------------------------------------------
// add_node, update_node, remove_node, cluster_status
// ---------------------------------------------------------------------------------------------

#[test]
fn add_node_update_node_remove_node_answer_with_the_hostname_and_validate_fields() {
    let ip = ips(SUITE, 2);
    let nodes = start_all(&ip);
    let (a, b) = (&nodes[0], &nodes[1]);
    let (ghost1, ghost2) = (ghost(&a.ip), addr_in(&a.ip, 249));

    // add_node errors (capture add_node_missing_hostname answers 200 and records a node
    // "undefined"; Skerry refuses).
    let add = |extra: Value| {
        let mut body = json!({"operation":"add_node","authorization":creds()});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    assert_400(a, add(json!({})), "'hostname' or 'url' is required");
    assert_400(
        a,
        add(json!({"hostname":""})),
        "'hostname' or 'url' is required",
    );
    assert_400(a, add(json!({"hostname":5})), "'hostname' must be a string");
    assert_400(
        a,
        add(json!({"hostname":b.ip,"authorization":5})),
        "'authorization' must be an object with username and password, or an Authorization header string",
    );
    assert_400(
        a,
        add(json!({"hostname":b.ip,"subscriptions":"dev.dog"})),
        "'subscriptions' must be an array",
    );
    assert_400(
        a,
        add(
            json!({"hostname":b.ip,"subscriptions":[{"database":"dev","table":"dog","subscribe":true}]}),
        ),
        "'subscriptions[0].publish' is required",
    );
    assert_400(
        a,
        add(json!({"hostname":b.ip,"replicates":"yes"})),
        "'replicates' must be a boolean or an object with sends and receives",
    );
    assert_400(
        a,
        add(json!({"hostname":b.ip,"replicates":{"sends":1}})),
        "'replicates.sends' must be a boolean",
    );
    assert_400(
        a,
        add(json!({"hostname":b.ip,"shard":"x"})),
        "'shard' must be a number",
    );
    assert_400(
        a,
        add(json!({"hostname":b.ip,"verify_tls":"no"})),
        "'verify_tls' must be a boolean",
    );
    assert_400(
        a,
        add(json!({"hostname":b.ip,"retain_authorization":"yes"})),
        "'retain_authorization' must be a boolean",
    );
    assert_400(
        a,
        add(json!({"hostname":b.ip,"revoked_certificates":"abc"})),
        "'revoked_certificates' must be an array",
    );
    for (extra, field) in [
        (
            json!({"hostname":b.ip,"start_time":"yesterday"}),
            "start_time",
        ),
        (json!({"hostname":b.ip,"start_time":true}), "start_time"),
        (json!({"url":"http://x"}), "'url'"),
        (json!({"hostname":a.ip}), a.ip.as_str()),
    ] {
        let (s, r) = a.op(add(extra.clone()));
        assert!(
            s == 400 && r["error"].as_str().is_some_and(|e| e.contains(field)),
            "{extra} -> {s} {r}"
        );
    }
    assert!(
        peer_names(&status(a)).is_empty(),
        "a refused add_node recorded a node:\n{}",
        dump(&[a])
    );

    // capture add_node / add_node_again name the URL ('ws://127.0.0.2:9933'); the seed and
    // Skerry name the hostname. Adding again answers the same.
    let added = json!({"message": format!("Successfully added '{}' to cluster", b.ip)});
    assert_eq!(
        a.ok(json!({"operation":"add_node","hostname":b.ip,"authorization":creds(),"verify_tls":false})),
        added
    );
    assert_eq!(
        a.ok(json!({"operation":"add_node","hostname":b.ip,"authorization":creds()})),
        added
    );
    // capture add_node_n3_url: by url only (the message still names the host).
    assert_eq!(
        a.ok(json!({"operation":"add_node","url":format!("ws://{}:9933", b.ip),"authorization":basic(USER, PASS)})),
        added
    );
    wait_mesh(&[a, b], &["system"]);

    // cluster_status (seed; capture cluster_status): type, node_name, is_enabled, url, and per
    // peer name/url/replicates/subscriptions/database_sockets.
    let st = status(a);
    assert_eq!(st["type"], "cluster-status");
    assert_eq!(st["node_name"], a.ip.as_str());
    assert_eq!(st["is_enabled"], true);
    assert_eq!(st["url"], format!("ws://{}:9933", a.ip));
    let c = connection(&st, &b.ip).expect("B listed");
    assert_eq!(c["url"], format!("ws://{}:9933", b.ip));
    assert_eq!(c["replicates"], true);
    assert_eq!(c["subscriptions"], Value::Null);
    let s = socket(&st, &b.ip, "system").expect("system socket");
    assert_eq!(s["connected"], true);
    assert_eq!(s["nodes"], json!([b.ip]));

    // A peer nobody listens for: recorded anyway, 200 with the reason appended (captures
    // add_node_no_credentials / update_node_unknown_node).
    let r = a.ok(json!({"operation":"add_node","hostname":ghost1,"authorization":creds()}));
    let msg = r["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with(&format!(
            "Successfully added '{ghost1}' to cluster but there was an error updating target node: Error returned from ws://{ghost1}:9933"
        )),
        "{r}"
    );
    assert!(peer_names(&status(a)).contains(&ghost1));

    // update_node errors (capture update_node_bad_subscriptions for the second).
    assert_400(
        a,
        json!({"operation":"update_node","subscriptions":[]}),
        "'hostname' is required",
    );
    assert_400(
        a,
        json!({"operation":"update_node","url":format!("ws://{}:9933", b.ip)}),
        "'hostname' is required",
    );
    assert_400(
        a,
        json!({"operation":"update_node","hostname":b.ip,"subscriptions":"dev.dog"}),
        "'subscriptions' must be an array",
    );
    assert_400(
        a,
        json!({"operation":"update_node","hostname":b.ip,"subscriptions":[{"database":"dev","table":"dog","subscribe":"yes","publish":true}]}),
        "'subscriptions[0].subscribe' must be a boolean",
    );
    assert_400(
        a,
        json!({"operation":"update_node","hostname":b.ip,"subscriptions":[{"table":"dog","subscribe":true,"publish":true}]}),
        "'subscriptions[0].database' is required",
    );
    assert_400(
        a,
        json!({"operation":"update_node","hostname":b.ip,"subscriptions":["dev.dog"]}),
        "'subscriptions[0]' must be an object",
    );
    assert_400(
        a,
        json!({"operation":"update_node","hostname":b.ip,"shard":"x"}),
        "'shard' must be a number",
    );
    assert_400(
        a,
        json!({"operation":"update_node","hostname":b.ip,"revoked_certificates":{}}),
        "'revoked_certificates' must be an array",
    );
    assert_400(
        a,
        json!({"operation":"update_node","hostname":b.ip,"subscriptions":[{"database":"dev","table":"dog","subscribe":true,"publish":null}]}),
        "'subscriptions[0].publish' is required",
    );
    assert_eq!(
        connection(&status(a), &b.ip).unwrap()["replicates"],
        true,
        "a refused update_node changed the link"
    );

    // capture update_node_no_subscriptions names the URL; Skerry the hostname.
    let updated = json!({"message": format!("Successfully updated '{}'", b.ip)});
    assert_eq!(
        a.ok(json!({"operation":"update_node","hostname":b.ip})),
        updated
    );
    // capture update_node_unknown_node: an unknown (unreachable) node is added, 200 + reason.
    let r = a.ok(json!({"operation":"update_node","hostname":ghost2,
        "subscriptions":[{"database":"dev","table":"dog","subscribe":true,"publish":true}]}));
    let msg = r["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with(&format!(
            "Successfully updated '{ghost2}' but there was an error updating target node: "
        )),
        "{r}"
    );
    let st = status(a);
    let g = connection(&st, &ghost2).expect("update_node added the unknown node");
    assert_eq!(g["replicates"], false);
    assert_eq!(
        g["subscriptions"],
        json!([{"database":"dev","table":"dog","subscribe":true,"publish":true}])
    );

    // capture update_node (legacy `schema` accepted); the peer stores the mirrored policy.
    assert_eq!(
        a.ok(json!({"operation":"update_node","hostname":b.ip,
            "subscriptions":[{"schema":"dev","table":"dog","subscribe":true,"publish":false}]})),
        updated
    );
    let subs_of =
        |n: &TestNode, peer: &str| connection(&status(n), peer).unwrap()["subscriptions"].clone();
    assert_eq!(connection(&status(a), &b.ip).unwrap()["replicates"], false);
    assert_eq!(
        subs_of(a, &b.ip),
        json!([{"database":"dev","table":"dog","subscribe":true,"publish":false}])
    );
    assert_eq!(
        subs_of(b, &a.ip),
        json!([{"database":"dev","table":"dog","subscribe":false,"publish":true}]),
        "B does not hold the mirrored subscriptions"
    );
    // Subscriptions merge by (database, table).
    a.ok(json!({"operation":"update_node","hostname":b.ip,
        "subscriptions":[{"database":"dev","table":"cat","subscribe":true,"publish":true}]}));
    a.ok(json!({"operation":"update_node","hostname":b.ip,
        "subscriptions":[{"database":"dev","table":"dog","subscribe":false,"publish":true}]}));
    assert_eq!(
        subs_of(a, &b.ip),
        json!([{"database":"dev","table":"dog","subscribe":false,"publish":true},
               {"database":"dev","table":"cat","subscribe":true,"publish":true}])
    );
    assert_eq!(
        subs_of(b, &a.ip),
        json!([{"database":"dev","table":"dog","subscribe":true,"publish":false},
               {"database":"dev","table":"cat","subscribe":true,"publish":true}])
    );

    // remove_node: capture remove_node_missing_hostname answers 200 and wipes hdb_nodes;
    // Skerry refuses. capture remove_node_unknown: 400 "<host> does not exist".
    assert_400(
        a,
        json!({"operation":"remove_node"}),
        "'hostname' is required",
    );
    let unknown = addr_in(&a.ip, 248);
    assert_400(
        a,
        json!({"operation":"remove_node","hostname":unknown}),
        &format!("{unknown} does not exist"),
    );
    assert_400(
        a,
        json!({"operation":"remove_node","name":unknown}),
        &format!("{unknown} does not exist"),
    );
    let (s, r) = a.op(json!({"operation":"remove_node","hostname":a.ip}));
    assert_eq!(s, 400, "removing this node itself: {r}");
    // capture remove_node_127_0_0_9 (unreachable node), and the seed's `name` field (capture
    // remove_node_by_name_field answered 'undefined').
    assert_eq!(
        a.ok(json!({"operation":"remove_node","hostname":ghost1})),
        json!({"message": format!("Successfully removed '{ghost1}' from cluster")})
    );
    assert_eq!(
        a.ok(json!({"operation":"remove_node","name":ghost2})),
        json!({"message": format!("Successfully removed '{ghost2}' from cluster")})
    );
    // capture remove_node.
    assert_eq!(
        a.ok(json!({"operation":"remove_node","hostname":b.ip})),
        json!({"message": format!("Successfully removed '{}' from cluster", b.ip)})
    );
    assert!(
        wait_until(T, || peer_names(&status(a)).is_empty()),
        "{}",
        dump(&[a])
    );
    assert!(
        wait_until(T, || status(b)["is_enabled"] == false),
        "B does not know it was removed:\n{}",
        dump(&[b])
    );
}

#[test]
fn every_cluster_operation_is_403_for_a_non_super_user_naming_harpers_handler() {
    let ip = ips(SUITE, 1);
    let n = start_repl(&ip[0]);
    add_plain_user(&n, "reader1");
    let g = ghost(&n.ip);
    let cases = [
        (
            json!({"operation":"add_node","hostname":g,"authorization":creds()}),
            "addNode",
        ),
        (
            json!({"operation":"update_node","hostname":g,"subscriptions":[]}),
            "updateNode",
        ),
        (
            json!({"operation":"remove_node","hostname":g}),
            "removeNode",
        ),
        (
            json!({"operation":"configure_cluster","connections":[{"hostname":g}]}),
            "configureCluster",
        ),
        (
            json!({"operation":"cluster_set_routes","routes":[g]}),
            "setRoutes",
        ),
        (json!({"operation":"cluster_get_routes"}), "getRoutes"),
        (
            json!({"operation":"cluster_delete_routes","routes":[g]}),
            "deleteRoutes",
        ),
        (json!({"operation":"cluster_status"}), "clusterStatus"),
    ];
    for (body, handler) in cases {
        // captures non_super_user_add_node, non_super_user_cluster_set_routes,
        // non_super_user_cluster_status (same shape for the others).
        let (s, r) = n.op_as("reader1", "pw", body.clone());
        assert_eq!(
            (s, r),
            (
                403,
                json!({"error":"This operation is not authorized due to role restrictions and/or invalid database items",
                       "unauthorized_access":[format!("Operation '{handler}' is restricted to 'super_user' roles")],
                       "invalid_schema_items":[]})
            ),
            "{body}"
        );
    }
    // Nothing happened.
    assert_eq!(routes(&n), json!([]));
    assert!(peer_names(&status(&n)).is_empty());
}

// ---------------------------------------------------------------------------------------------
// configure_cluster
// ---------------------------------------------------------------------------------------------

#[test]
fn configure_cluster_validates_every_connection_before_changing_anything() {
    let ip = ips(SUITE, 3);
    let nodes = start_all(&ip);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    add_node(a, &b.ip);
    wait_mesh(&[a, b], &["system"]);
    let conn_c = json!({"hostname":c.ip,"authorization":creds()});
    // captures configure_cluster_missing_connections and configure_cluster_not_array.
    assert_400(
        a,
        json!({"operation":"configure_cluster"}),
        "'connections' is required",
    );
    assert_400(
        a,
        json!({"operation":"configure_cluster","connections":conn_c}),
        "'connections' must be an array",
    );
    // capture configure_cluster_bad_connection answers 200 and records node "undefined";
    // Skerry validates every connection first and names it.
    assert_400(
        a,
        json!({"operation":"configure_cluster","connections":[conn_c, {"verify_tls":false}]}),
        "connections[1]: 'hostname' or 'url' is required",
    );
    assert_400(
        a,
        json!({"operation":"configure_cluster","connections":[c.ip]}),
        "'connections[0]' must be an object",
    );
    assert_400(
        a,
        json!({"operation":"configure_cluster","connections":[
            {"hostname":c.ip,"subscriptions":[{"schema":"dev","table":"dog","subscribe":"x","publish":true}]}]}),
        "connections[0]: 'subscriptions[0].subscribe' must be a boolean",
    );
    assert_400(
        a,
        json!({"operation":"configure_cluster","connections":[conn_c, {"hostname":b.ip,"shard":"one"}]}),
        "connections[1]: 'shard' must be a number",
    );
    // Nothing changed: B still a member on both sides, C never contacted.
    assert_eq!(
        peer_names(&status(a)),
        [b.ip.clone()].into_iter().collect(),
        "{}",
        dump(&[a])
    );
    assert_eq!(status(b)["is_enabled"], true);
    assert!(
        peer_names(&status(c)).is_empty(),
        "C was contacted by a refused configure_cluster"
    );
}

#[test]
fn configure_cluster_adds_listed_removes_unlisted_and_reports_the_unreachable_connection() {
    let ip = ips(SUITE, 3);
    let nodes = start_all(&ip);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let g = ghost(&a.ip);
    add_node(a, &b.ip);
    wait_mesh(&[a, b], &["system"]);

    // The seed's example shape: add_node objects with `schema` subscriptions.
    let subs = json!([{"schema":"dev","table":"dog","subscribe":true,"publish":true}]);
    let r = a.ok(json!({"operation":"configure_cluster","connections":[
        {"hostname":c.ip,"verify_tls":false,"authorization":creds(),"subscriptions":subs},
        {"hostname":g,"verify_tls":false,"authorization":creds()}]}));
    // capture configure_cluster: {"message":"Configure cluster complete.","connections":
    // [{"response":...}]}, and it removes nothing. Skerry: the seed's message when every
    // connection succeeded, each connection named with its response or error, and `removed`.
    let conns = r["connections"].as_array().cloned().unwrap_or_default();
    assert_eq!(conns.len(), 2, "{r}");
    assert_eq!(
        conns[0],
        json!({"hostname":c.ip,"response":format!("Successfully added '{}' to cluster", c.ip)}),
        "{r}"
    );
    assert_eq!(conns[1]["hostname"], g.as_str(), "{r}");
    let failure = conns[1]["response"]
        .as_str()
        .or(conns[1]["error"].as_str())
        .unwrap_or_default();
    assert!(
        failure.contains("error") && failure.contains(&format!("ws://{g}:9933")),
        "the unreachable connection is not reported with its reason: {r}"
    );
    assert_eq!(r["removed"], json!([b.ip]), "{r}");
    let message = r["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Cluster") && message != "Cluster successfully configured.",
        "a failed connection must not be hidden behind the plain success message: {r}"
    );

    // A now has exactly C and the ghost; the link with C carries the subscriptions.
    assert_eq!(
        peer_names(&status(a)),
        [c.ip.clone(), g.clone()].into_iter().collect()
    );
    let st = status(a);
    let cc = connection(&st, &c.ip).unwrap();
    assert_eq!(cc["replicates"], false);
    assert_eq!(
        cc["subscriptions"],
        json!([{"database":"dev","table":"dog","subscribe":true,"publish":true}])
    );
    // B is out: it knows it, and C (which learnt the membership from A) drops it too.
    assert!(
        wait_until(T, || status(b)["is_enabled"] == false),
        "B does not know it was removed:\n{}",
        dump(&[b])
    );
    assert!(
        wait_until(T, || !peer_names(&status(c)).contains(&b.ip)),
        "C still lists B:\n{}",
        dump(&[c])
    );
    wait_link(a, &c.ip, &["system"]);
    create_table(a, "dog");
    wait_table(&[a, c], "dog");
    wait_link(a, &c.ip, &["system", "dev"]);
    put(a, "dog", "a1");
    put(c, "dog", "c1");
    wait_converged(&[a, c], "dog", Some(2), T);
    assert!(
        holds_for(Duration::from_secs(1), || !has(b, "dog", "a1")
            && !has(b, "dog", "c1")),
        "the removed node still receives data"
    );

    // Listing only C now: the ghost is removed, and this time the seed's message.
    let r = a.ok(json!({"operation":"configure_cluster","connections":[
        {"hostname":c.ip,"authorization":creds(),"subscriptions":subs}]}));
    assert_eq!(
        r,
        json!({"message":"Cluster successfully configured.",
               "connections":[{"hostname":c.ip,"response":format!("Successfully added '{}' to cluster", c.ip)}],
               "removed":[g]})
    );
    assert_eq!(peer_names(&status(a)), [c.ip.clone()].into_iter().collect());
    put(a, "dog", "a2");
    wait_present(&[c], "dog", "a2");
}

/// Issue 15: after a route, a configure_cluster that removed the peer and one that re-added it,
/// cluster_status showed the peer down forever (until a restart) although data flowed.
#[test]
fn status_follows_the_real_sockets_after_route_remove_and_re_add() {
    let ip = ips(SUITE, 3);
    let nodes = start_all(&ip);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    a.ok(json!({"operation":"cluster_set_routes","routes":[c.ip]}));
    add_node(a, &c.ip);
    wait_link(a, &c.ip, &["system"]);
    // Removes C's membership row (the route keeps A dialling it).
    a.ok(json!({"operation":"configure_cluster","connections":[
        {"hostname":b.ip,"authorization":creds()}]}));
    a.ok(json!({"operation":"configure_cluster","connections":[
        {"hostname":b.ip,"authorization":creds()},{"hostname":c.ip,"authorization":creds()}]}));
    wait_link(a, &c.ip, &["system"]);
    // And again after C restarts.
    let mut nodes = nodes;
    nodes[2].restart();
    wait_link(&nodes[0], &nodes[2].ip, &["system"]);
}

// ---------------------------------------------------------------------------------------------
// Concurrent membership and route changes (issue 9 item 1: each change is one input)
// ---------------------------------------------------------------------------------------------

/// Runs `n` copies of `body(i)` on `node` at once (a barrier lines them up) and returns the
/// answers.
fn at_once(node: &TestNode, n: usize, body: impl Fn(usize) -> Value + Sync) -> Vec<(u16, Value)> {
    let gate = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let (gate, body) = (&gate, &body);
                s.spawn(move || {
                    gate.wait();
                    node.op(body(i))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn concurrent_update_nodes_of_one_peer_lose_no_revoked_certificate() {
    // Each update_node read the peer's row, called the peer, then wrote its copy back: of
    // eight concurrent revocations, most were lost (a revoked certificate trusted again).
    let ip = ips(SUITE, 2);
    let (a, b) = (start_repl(&ip[0]), start_repl(&ip[1]));
    add_node(&a, &b.ip);
    let answers = at_once(
        &a,
        8,
        |i| json!({"operation":"update_node","hostname":b.ip,"revoked_certificates":[format!("serial-{i}")]}),
    );
    for (s, r) in &answers {
        assert_eq!(*s, 200, "{r}");
    }
    let rows = a.ok(
        json!({"operation":"search_by_value","database":"system","table":"hdb_nodes",
        "search_attribute":"name","search_value":b.ip,"get_attributes":["revoked_certificates"]}),
    );
    let mut got: Vec<String> = rows[0]["revoked_certificates"]
        .as_array()
        .unwrap_or_else(|| panic!("{rows}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    got.sort();
    let want: Vec<String> = (0..8).map(|i| format!("serial-{i}")).collect();
    assert_eq!(got, want);
}

#[test]
fn concurrent_cluster_set_routes_lose_no_route() {
    // Each call copied the routes, added its own and stored the copy: concurrent calls kept
    // only the last writer's route.
    let ip = ips(SUITE, 1);
    let mut n = start_repl(&ip[0]);
    let answers = at_once(
        &n,
        8,
        |i| json!({"operation":"cluster_set_routes","routes":[addr_in(&ip[0], 241 + i as u8)]}),
    );
    for (s, r) in &answers {
        assert_eq!(*s, 200, "{r}");
    }
    let mut got: Vec<String> = routes(&n)
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    got.sort();
    let want: Vec<String> = (0..8).map(|i| addr_in(&ip[0], 241 + i)).collect();
    assert_eq!(got, want);
    // And the file agrees after a restart.
    n.restart();
    assert_eq!(routes(&n).as_array().map(Vec::len), Some(8));
}
