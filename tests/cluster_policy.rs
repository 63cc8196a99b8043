//! Link policies between real `skerry` processes (suite 41): explicit subscriptions hold in
//! both directions (publish-only, subscribe-only, an unlisted table stays local), one-way
//! `replicates: {sends, receives}` (on add_node and on a route entry), `update_node` changing a
//! link live (stopping, enabling, adding a table, also after a reconnect), and a third node of
//! a full mesh never bypassing an explicit link, neither by relay nor by the full copy a new
//! member takes (which must not cost the new member the third node's own older rows either).
//! `system` always flows both ways.
//!
//! Every wait is bounded; `holds_for` windows only check that something does *not* happen.

mod common;
use common::cluster::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const SUITE: u8 = 41;

/// How long "must not arrive" is watched after the positive control already arrived.
const QUIET: Duration = Duration::from_secs(2);

fn sub(table: &str, subscribe: bool, publish: bool) -> Value {
    json!({"database":"dev","table":table,"subscribe":subscribe,"publish":publish})
}

fn update_subs(on: &TestNode, peer: &str, subs: Value) {
    assert_eq!(
        on.ok(json!({"operation":"update_node","hostname":peer,"subscriptions":subs})),
        json!({"message": format!("Successfully updated '{peer}'")})
    );
}

/// Neither of `absent` (node, table, id) appears during the quiet window.
/// Waits until B holds C's 20 older dog rows (`c-old-<i>`), then checks that none of A's
/// (`a-...`) reached B: for the tests where B's link with A is explicit and with C full.
fn wait_c_rows_on_b_without_a_rows(a: &TestNode, b: &TestNode, c: &TestNode) {
    let want: Vec<String> = (0..20).map(|i| format!("c-old-{i}")).collect();
    let mut missing = Vec::new();
    let ok = wait_until(T, || {
        missing = want
            .iter()
            .filter(|id| !has(b, "dog", id))
            .cloned()
            .collect();
        missing.is_empty()
    });
    assert!(
        ok,
        "B lacks C's older rows {missing:?}\n{}\n--- B's log ---\n{}",
        dump(&[a, b, c]),
        b.log()
    );
    let leaked: Vec<String> = keys(b, "dog")
        .into_iter()
        .filter(|k| k.contains("a-"))
        .collect();
    assert!(
        leaked.is_empty(),
        "A's rows reached B: {leaked:?}\n--- B's log ---\n{}",
        b.log()
    );
}

fn stays_absent(absent: &[(&TestNode, &str, &str)], nodes: &[&TestNode]) {
    let mut leaked = String::new();
    let ok = holds_for(QUIET, || {
        for (n, t, id) in absent {
            if has(n, t, id) {
                leaked = format!("{t}/{id} reached {}", n.ip);
                return false;
            }
        }
        true
    });
    assert!(ok, "{leaked}\n{}", dump(nodes));
}

#[test]
fn subscriptions_publish_only_and_subscribe_only_hold_both_ways_and_unlisted_table_stays_local() {
    let ip = ips(SUITE, 2);
    let nodes = full_mesh_with_tables(&ip, &["dog", "cat", "bird"]);
    let (a, b) = (&nodes[0], &nodes[1]);
    // A: dog publish-only (A sends, does not receive), cat subscribe-only (A receives, does not
    // send), bird unlisted (local on both).
    update_subs(
        a,
        &b.ip,
        json!([sub("dog", false, true), sub("cat", true, false)]),
    );
    let st_a = status(a);
    let st_b = status(b);
    assert_eq!(connection(&st_a, &b.ip).unwrap()["replicates"], false);
    assert_eq!(
        connection(&st_a, &b.ip).unwrap()["subscriptions"],
        json!([sub("dog", false, true), sub("cat", true, false)])
    );
    assert_eq!(connection(&st_b, &a.ip).unwrap()["replicates"], false);
    assert_eq!(
        connection(&st_b, &a.ip).unwrap()["subscriptions"],
        json!([sub("dog", true, false), sub("cat", false, true)]),
        "B does not hold the mirrored subscriptions"
    );
    for t in ["dog", "cat", "bird"] {
        put(a, t, &format!("a-{t}"));
        put(b, t, &format!("b-{t}"));
    }
    // The allowed directions deliver...
    wait_present(&[b], "dog", "a-dog");
    wait_present(&[a], "cat", "b-cat");
    // ...and nothing else crosses.
    stays_absent(
        &[
            (a, "dog", "b-dog"),
            (b, "cat", "a-cat"),
            (a, "bird", "b-bird"),
            (b, "bird", "a-bird"),
        ],
        &[a, b],
    );
    // `system` still flows both ways.
    add_plain_user(b, "from_b");
    add_plain_user(a, "from_a");
    assert!(
        wait_until(T, || user_names(a).contains("from_b")
            && user_names(b).contains("from_a")),
        "system does not flow both ways under explicit subscriptions: A {:?}, B {:?}",
        user_names(a),
        user_names(b)
    );
    // Nothing of it was a race: later writes still obey the policy.
    put(a, "dog", "a-dog-2");
    put(b, "cat", "b-cat-2");
    put(b, "dog", "b-dog-2");
    put(a, "cat", "a-cat-2");
    wait_present(&[b], "dog", "a-dog-2");
    wait_present(&[a], "cat", "b-cat-2");
    stays_absent(&[(a, "dog", "b-dog-2"), (b, "cat", "a-cat-2")], &[a, b]);
}

#[test]
fn replicates_sends_true_receives_false_is_one_way_for_user_tables_only() {
    let ip = ips(SUITE, 2);
    let nodes = start_all(&ip);
    let (a, b) = (&nodes[0], &nodes[1]);
    add_node_with(
        a,
        &b.ip,
        json!({"replicates":{"sends":true,"receives":false}}),
    );
    wait_mesh(&[a, b], &["system"]);
    assert_eq!(
        connection(&status(a), &b.ip).unwrap()["replicates"],
        json!({"sends":true,"receives":false})
    );
    assert_eq!(
        connection(&status(b), &a.ip).unwrap()["replicates"],
        json!({"sends":false,"receives":true}),
        "B does not hold the mirrored direction"
    );
    create_table(a, "dog");
    wait_table(&[a, b], "dog");
    wait_link(b, &a.ip, &["dev"]);
    put(a, "dog", "a1");
    put(b, "dog", "b1");
    wait_present(&[b], "dog", "a1");
    stays_absent(&[(a, "dog", "b1")], &[a, b]);
    add_plain_user(b, "from_b");
    assert!(
        wait_until(T, || user_names(a).contains("from_b")),
        "system does not flow against a one-way link: A has {:?}",
        user_names(a)
    );
    put(a, "dog", "a2");
    put(b, "dog", "b2");
    wait_present(&[b], "dog", "a2");
    stays_absent(&[(a, "dog", "b1"), (a, "dog", "b2")], &[a, b]);
}

#[test]
fn update_node_stopping_a_table_takes_effect_live_without_restart() {
    let ip = ips(SUITE, 2);
    let nodes = full_mesh_with_tables(&ip, &["dog", "cat"]);
    let (a, b) = (&nodes[0], &nodes[1]);
    put(a, "dog", "full-1");
    put(a, "cat", "full-cat-1");
    wait_present(&[b], "dog", "full-1");
    wait_present(&[b], "cat", "full-cat-1");
    // A no longer publishes dog (still receives it); cat is now outside the subscriptions.
    update_subs(a, &b.ip, json!([sub("dog", true, false)]));
    put(a, "dog", "stop-a");
    put(a, "cat", "stop-cat-a");
    put(b, "dog", "stop-b");
    put(b, "cat", "stop-cat-b");
    wait_present(&[a], "dog", "stop-b");
    stays_absent(
        &[
            (b, "dog", "stop-a"),
            (b, "cat", "stop-cat-a"),
            (a, "cat", "stop-cat-b"),
        ],
        &[a, b],
    );
}

#[test]
fn update_node_enabling_publish_of_a_table_delivers_new_writes_live() {
    let ip = ips(SUITE, 2);
    let nodes = full_mesh_with_tables(&ip, &["dog"]);
    let (a, b) = (&nodes[0], &nodes[1]);
    update_subs(a, &b.ip, json!([sub("dog", true, false)]));
    put(a, "dog", "off-a");
    put(b, "dog", "off-b");
    wait_present(&[a], "dog", "off-b");
    stays_absent(&[(b, "dog", "off-a")], &[a, b]);
    // Publish switched on (the merge replaces the dog entry): A's new writes must reach B.
    // Off and on again ten times (a failure here is a race, not every round loses it): each
    // time B's receiving socket for dev goes away and comes back, and whatever A writes after
    // the update_node answered must arrive.
    for round in 0..10 {
        if round > 0 {
            update_subs(a, &b.ip, json!([sub("dog", true, false)]));
        }
        assert!(
            wait_until(T, || socket(&status(b), &a.ip, "dev")
                .is_some_and(|s| s["receiving"] == false)),
            "round {round}: B still receives dev from A:\n{}",
            dump(&[a, b])
        );
        update_subs(a, &b.ip, json!([sub("dog", true, true)]));
        assert_eq!(
            connection(&status(b), &a.ip).unwrap()["subscriptions"],
            json!([sub("dog", true, true)])
        );
        let id = format!("on-a-{round}");
        put(a, "dog", &id);
        wait_present(&[b], "dog", &id);
        let id = format!("on-b-{round}");
        put(b, "dog", &id);
        wait_present(&[a], "dog", &id);
    }
}

#[test]
fn update_node_adding_a_table_to_the_subscriptions_delivers_its_new_writes_live() {
    let ip = ips(SUITE, 2);
    let nodes = full_mesh_with_tables(&ip, &["dog", "cat"]);
    let (a, b) = (&nodes[0], &nodes[1]);
    update_subs(a, &b.ip, json!([sub("dog", true, true)]));
    put(a, "dog", "dog-a");
    put(a, "cat", "cat-off-a");
    wait_present(&[b], "dog", "dog-a");
    stays_absent(&[(b, "cat", "cat-off-a")], &[a, b]);
    // cat added by a merge: both entries listed, and cat's new writes flow both ways.
    update_subs(a, &b.ip, json!([sub("cat", true, true)]));
    assert_eq!(
        connection(&status(a), &b.ip).unwrap()["subscriptions"],
        json!([sub("dog", true, true), sub("cat", true, true)])
    );
    put(a, "cat", "cat-on-a");
    put(b, "cat", "cat-on-b");
    wait_present(&[b], "cat", "cat-on-a");
    wait_present(&[a], "cat", "cat-on-b");
}

#[test]
fn update_node_adding_a_table_after_a_reconnect_delivers_its_new_writes_live() {
    let ip = ips(SUITE, 2);
    let mut nodes = full_mesh_with_tables(&ip, &["dog", "cat"]);
    update_subs(&nodes[0], &ip[1], json!([sub("dog", true, true)]));
    // B's sockets are re-established under the dog-only subscriptions.
    nodes[1].restart();
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_mesh(&[a, b], &["system", "dev"]);
    put(a, "dog", "dog-a");
    put(a, "cat", "cat-off-a");
    wait_present(&[b], "dog", "dog-a");
    stays_absent(&[(b, "cat", "cat-off-a")], &[a, b]);
    update_subs(a, &b.ip, json!([sub("cat", true, true)]));
    put(a, "cat", "cat-on-a");
    put(b, "cat", "cat-on-b");
    wait_present(&[b], "cat", "cat-on-a");
    wait_present(&[a], "cat", "cat-on-b");
}

#[test]
fn route_entry_with_replicates_sends_only_is_one_way_without_add_node() {
    let ip = ips(SUITE, 2);
    let nodes = start_all(&ip);
    let (a, b) = (&nodes[0], &nodes[1]);
    a.ok(json!({"operation":"cluster_set_routes","routes":[
        {"hostname":b.ip,"port":9933,"replicates":{"sends":true,"receives":false}}]}));
    b.ok(json!({"operation":"cluster_set_routes","routes":[a.ip]}));
    wait_link(a, &b.ip, &["system"]);
    wait_link(b, &a.ip, &["system"]);
    assert_eq!(
        connection(&status(a), &b.ip).unwrap()["replicates"],
        json!({"sends":true,"receives":false})
    );
    create_table(a, "dog");
    wait_table(&[a, b], "dog");
    put(a, "dog", "a1");
    put(b, "dog", "b1");
    wait_present(&[b], "dog", "a1");
    stays_absent(&[(a, "dog", "b1")], &[a, b]);
}

#[test]
fn explicit_link_is_not_bypassed_through_a_full_mesh_third_node() {
    let ip = ips(SUITE, 3);
    let nodes = full_mesh_with_tables(&ip, &["dog", "cat"]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // A-B explicit: A receives B's dog, publishes nothing to B; cat is not listed. C replicates
    // fully with both.
    update_subs(a, &b.ip, json!([sub("dog", true, false)]));
    put(a, "dog", "a-dog");
    put(a, "cat", "a-cat");
    put(b, "dog", "b-dog");
    put(c, "dog", "c-dog");
    // Controls: A's writes reach C; B's reach A (directly) and C; C's reach both.
    wait_present(&[c], "dog", "a-dog");
    wait_present(&[c], "cat", "a-cat");
    wait_present(&[a, c], "dog", "b-dog");
    wait_present(&[a, b], "dog", "c-dog");
    // A's writes never reach B, neither directly nor relayed by C.
    stays_absent(&[(b, "dog", "a-dog"), (b, "cat", "a-cat")], &[a, b, c]);

    // B has no dev socket to A at all (it receives nothing of dev from A): for a full link
    // that is exactly when A's transactions would be relayed through C. More writes on A, and
    // B watched again once C has relayed its own later write to B.
    for i in 0..5 {
        put(a, "dog", &format!("a-dog-{i}"));
    }
    put(c, "dog", "c-dog-2");
    wait_present(&[b], "dog", "c-dog-2");
    wait_present(&[c], "dog", "a-dog-4");
    stays_absent(
        &[
            (b, "dog", "a-dog-0"),
            (b, "dog", "a-dog-4"),
            (b, "dog", "a-dog"),
        ],
        &[a, b, c],
    );
}

#[test]
fn new_member_with_an_explicit_link_gets_the_third_nodes_rows_but_never_the_excluded_origin() {
    let ip = ips(SUITE, 3);
    let mut nodes = full_mesh_with_tables(&[ip[0].clone(), ip[2].clone()], &["dog"]);
    let b = start_repl(&ip[1]);
    nodes.insert(1, b);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    for i in 0..20 {
        put(a, "dog", &format!("a-old-{i}"));
        put(c, "dog", &format!("c-old-{i}"));
    }
    wait_converged(&[a, c], "dog", Some(40), T);
    // B joins through A with an explicit link: A's dog is never sent to B (B's dog still goes
    // to A). B learns C by gossip and replicates fully with it.
    add_node_with(a, &b.ip, json!({"subscriptions":[sub("dog", true, false)]}));
    wait_mesh(&[a, b, c], &["system"]);
    put(c, "dog", "c-new");
    put(a, "dog", "a-new");
    wait_present(&[b], "dog", "c-new");
    // Everything C wrote, before and after B joined, reaches B (its link with C is full); A's
    // rows reach B neither directly nor through C (live stream or full copy).
    wait_c_rows_on_b_without_a_rows(a, b, c);
    stays_absent(&[(b, "dog", "a-new"), (b, "dog", "a-old-0")], &[a, b, c]);
    put(b, "dog", "b-new");
    wait_present(&[a, c], "dog", "b-new");
}

#[test]
fn member_joining_over_an_explicit_link_learns_members_whose_row_a_third_node_wrote() {
    // The mesh of A and C is made from C's side, so the newest write of C's hdb_nodes row on A
    // is C's own. B joins through A over a subscription link: membership (system) must still
    // reach it whole, relayed by A, or B never dials C and the mesh stays split.
    let ip = ips(SUITE, 3);
    let nodes = start_all(&ip);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    add_node(c, &a.ip);
    wait_mesh(&[a, c], &["system"]);
    create_table(a, "dog");
    wait_table(&[a, c], "dog");
    add_node_with(a, &b.ip, json!({"subscriptions":[sub("dog", true, false)]}));
    wait_mesh(&[a, b, c], &["system"]);
    // The explicit link still limits user data: C's rows reach B over their full link, A's
    // never do.
    wait_table(&[b], "dog");
    put(c, "dog", "c-1");
    put(a, "dog", "a-1");
    wait_present(&[b], "dog", "c-1");
    stays_absent(&[(b, "dog", "a-1")], &[a, b, c]);
}

#[test]
fn new_member_copying_over_an_explicit_link_still_gets_the_third_nodes_older_rows() {
    let ip = ips(SUITE, 3);
    let mut nodes = full_mesh_with_tables(&[ip[0].clone(), ip[2].clone()], &["dog", "cat"]);
    let b = start_repl(&ip[1]);
    nodes.insert(1, b);
    for i in 0..20 {
        put(&nodes[0], "dog", &format!("a-old-{i}"));
        put(&nodes[2], "dog", &format!("c-old-{i}"));
    }
    put(&nodes[0], "cat", "a-cat");
    wait_converged(&[&nodes[0], &nodes[2]], "dog", Some(40), T);
    // C is down while B joins through A, so B's first copy of dev comes from A, over a link
    // that carries cat both ways but not A's dog to B.
    nodes[2].stop();
    add_node_with(
        &nodes[0],
        &ip[1],
        json!({"subscriptions":[sub("dog", true, false), sub("cat", true, true)]}),
    );
    let done = format!("full copy of dev from {} done", ip[0]);
    assert!(
        wait_until(T, || !log_lines(&nodes[1], &done).is_empty()),
        "B never copied dev from A:\n{}",
        nodes[1].log()
    );
    assert!(
        has(&nodes[1], "cat", "a-cat"),
        "the copy from A lacks A's cat"
    );
    nodes[2].start_again();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_mesh(&[a, b, c], &["system"]);
    put(c, "dog", "c-new");
    wait_present(&[b], "dog", "c-new");
    // B's link with C is full: everything C wrote reaches B, including what C wrote before B
    // joined (a copy from A that left out dev.dog must not count as having C's dog rows).
    wait_c_rows_on_b_without_a_rows(a, b, c);
}

/// Issue 15: `update_node` with `replicates: true`, `subscriptions: null` or `subscriptions: []`
/// answered "Successfully updated" and changed nothing.
#[test]
fn update_node_undoes_explicit_subscriptions_with_replicates_true_null_or_empty() {
    let ip = ips(SUITE, 2);
    let nodes = full_mesh_with_tables(&ip, &["dog", "cat"]);
    let (a, b) = (&nodes[0], &nodes[1]);
    for (i, undo) in [
        json!({"replicates": true}),
        json!({"subscriptions": null}),
        json!({"subscriptions": []}),
    ]
    .into_iter()
    .enumerate()
    {
        update_subs(a, &b.ip, json!([sub("dog", true, true)]));
        wait_until(T, || {
            connection(&status(a), &b.ip).is_some_and(|c| c["subscriptions"].is_array())
        });
        let mut body = json!({"operation":"update_node","hostname":b.ip});
        for (k, v) in undo.as_object().unwrap() {
            body[k] = v.clone();
        }
        a.ok(body);
        let st = status(a);
        let c = connection(&st, &b.ip).unwrap();
        assert_eq!(
            (c["replicates"].clone(), c["subscriptions"].clone()),
            (json!(true), Value::Null),
            "{undo}: {st}"
        );
        // And the unlisted table flows again.
        let id = format!("cat-{i}");
        put(a, "cat", &id);
        wait_present(&[b], "cat", &id);
    }
}

/// Issue 15: limiting the n1-n2 link to dev.dog (publish only), writing to dev.cat on n1 and
/// then restoring full replication left n2 without that cat record for good: the filtered-out
/// write had moved n2's cursor past it. A widened link now brings it with a copy.
#[test]
fn widening_a_link_back_fills_what_the_narrow_link_skipped() {
    let ip = ips(SUITE, 3);
    let nodes = full_mesh_with_tables(&ip, &["dog", "cat"]);
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    update_subs(n1, &n2.ip, json!([sub("dog", false, true)]));
    wait_until(T, || {
        connection(&status(n2), &n1.ip).is_some_and(|c| c["subscriptions"].is_array())
    });
    put(n1, "cat", "while-narrow");
    put(n1, "dog", "dog-control");
    // The control arrives everywhere; the cat record only where the links allow.
    wait_present(&[n2, n3], "dog", "dog-control");
    wait_present(&[n3], "cat", "while-narrow");
    assert!(
        !has(n2, "cat", "while-narrow"),
        "the narrow link let the cat record through"
    );
    // Back to full replication, as the user did.
    add_node_with(n1, &n2.ip, json!({"replicates": true}));
    wait_present(&[n2], "cat", "while-narrow");
    // And it stays consistent after a restart of n2.
    let mut nodes = nodes;
    nodes[1].restart();
    assert!(has(&nodes[1], "cat", "while-narrow"));
}
