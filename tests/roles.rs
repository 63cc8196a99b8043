//! Roles as Harper 4.7.29 checks and shows them, replayed from its captured answers:
//! `add_role` / `alter_role` permission validation (issue 10 `f_*` and issue 7 `add_role_*`,
//! in `tests/fixtures/harper/roles/`), and what describe_all / describe_database /
//! describe_table show a restricted role (issue 7 `a_*_describe_*`, `c_u_plain_describe_*`,
//! replayed after the same writes Harper saw, from `tests/fixtures/harper/attribute_permissions/`).
//! Where Skerry differs on purpose (README, "Differences from Harper") the expected answer is
//! edited here, in plain sight.

mod common;

use common::replay::{self, Case, Normaliser};
use common::*;
use serde_json::{json, Value};

const SUITE: u8 = 24;

/// Replays `cases` in order; `expect` turns Harper's answer into the one Skerry must give.
fn run(n: &TestNode, cases: &[Case], mut expect: impl FnMut(&Case) -> Value) -> Vec<String> {
    let (mut harper, mut skerry) = (Normaliser::default(), Normaliser::default());
    let mut failures = Vec::new();
    for c in cases {
        let (status, got) = replay::send(n, c);
        let got = skerry.apply(&got);
        let want = harper.apply(&expect(c));
        if let Some(m) = replay::mismatch(&c.name, (c.status, &want), (status, &got)) {
            failures.push(m);
        }
    }
    failures
}

/// Skerry has no built-in `cluster_user` role (replication does not log in as a user), so
/// Harper's role lists lose that entry.
fn without_cluster_user(roles: &Value) -> Value {
    Value::Array(
        roles
            .as_array()
            .expect("a role list")
            .iter()
            .filter(|r| r["id"] != "cluster_user")
            .cloned()
            .collect(),
    )
}

/// Issue 10: the set-up (`dev.dog`, `dev.cat`, role `r_dog`, user `u_dog`) then every `f_*`
/// case: invalid permissions answer Harper's 400 with its grouping into `main_permissions` and
/// `schema_permissions`, alter_role of an unknown id answers `Invalid role id`, and the role
/// list and a valid alter_role answer Harper's records.
#[test]
fn role_permission_errors_are_grouped_and_worded_as_harper_4_7_29() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    let cases = replay::load("roles/issue10", &["setup_", "f_"]);
    assert_eq!(cases.len(), 16, "fixtures missing");
    let failures = run(&n, &cases, |c| match c.name.as_str() {
        "f_list_roles_after" => without_cluster_user(&c.response),
        _ => c.response.clone(),
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The refused roles were not stored, and r_dog kept its permissions.
    let roles = n.ok(json!({"operation":"list_roles"}));
    let ids: Vec<&str> = roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r_dog", "super_user"], "{roles}");
}

/// Issue 7: the set-up (`dev.emp`, `dev.hidden`), Harper's valid and invalid add_role cases
/// (table/attribute conflicts, unknown attributes, missing `attribute_permissions`, ...) and
/// the role list after them.
#[test]
fn add_role_refuses_what_harper_refuses_and_stores_what_it_stores() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    let cases = replay::load(
        "roles/issue7",
        &["setup_", "add_role_", "list_roles_", "add_user_"],
    );
    assert_eq!(cases.len(), 28, "fixtures missing");
    let failures = run(&n, &cases, |c| match c.name.as_str() {
        "list_roles_after_add_role" => without_cluster_user(&c.response),
        _ => c.response.clone(),
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Harper's table object for a role whose permissions list no attributes shows
/// `"attributes": []` although the role may use them all; Skerry shows them all (they are
/// what the admin sees).
fn with_all_attributes(n: &TestNode, c: &Case) -> Value {
    let all = n.ok(json!({"operation":"describe_table","database":"dev","table":"emp"}))
        ["attributes"]
        .clone();
    assert_eq!(all.as_array().map(Vec::len), Some(6), "{all}");
    let mut want = c.response.clone();
    let table = match c.request["operation"].as_str() {
        Some("describe_all") => &mut want["dev"]["emp"],
        Some("describe_database") => &mut want["emp"],
        _ => &mut want,
    };
    assert_eq!(table["attributes"], json!([]), "the capture changed");
    table["attributes"] = all;
    want
}

/// Issue 7, users with attribute permissions (u_ssn: none readable, u_name: name, u_ssn2: name
/// and salary) and one without (u_plain): each user's captured requests replayed after the
/// same set-up and table resets Harper saw; every answer, describe operations included, must
/// be Harper's (u_plain's describe answers with Skerry's documented difference).
#[test]
fn describe_shows_a_restricted_role_only_the_attributes_it_may_use() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    let setup = replay::load("roles/issue7", &["setup_", "add_role_r_", "add_user_"]);
    assert_eq!(setup.len(), 17, "fixtures missing");
    for c in &setup {
        assert_eq!(replay::send(&n, c).0, c.status, "{}", c.name);
    }
    let orig = json!([{"id":1,"name":"Ann","owner_ssn":"111-22-3333","salary":100},
        {"id":2,"name":"Bob","owner_ssn":"222-33-4444","salary":200}]);
    let mut failures = Vec::new();
    let mut replayed = 0;
    for user in ["u_ssn", "u_name", "u_ssn2", "u_plain"] {
        // Harper's capture reset dev.emp between users (requests not captured).
        n.ok(json!({"operation":"delete","database":"dev","table":"emp","ids":[1,2,3,4,5]}));
        n.ok(json!({"operation":"insert","database":"dev","table":"emp","records":orig}));
        let prefix = if user == "u_plain" {
            "c_u_plain_".to_string()
        } else {
            format!("a_{user}_")
        };
        let mut cases = replay::load("attribute_permissions", &[&prefix]);
        cases.extend(replay::load("roles/issue7", &[&prefix]));
        // u_ssn and u_ssn2 share a prefix: keep each user's own cases.
        cases.retain(|c| c.auth.as_ref().is_some_and(|(u, _)| u == user));
        cases.sort_by_key(|c| c.order);
        replayed += cases.len();
        failures.extend(run(&n, &cases, |c| {
            if user == "u_plain" && c.status == 200 {
                with_all_attributes(&n, c)
            } else {
                c.response.clone()
            }
        }));
    }
    assert_eq!(replayed, 3 * 18 + 3, "fixtures missing");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// alter_role validates like add_role, before it looks the role up, and a refused change
/// leaves the role as it was.
#[test]
fn alter_role_validates_permissions_before_the_id_and_changes_nothing_when_refused() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    let bad = json!({"super_user":false,"dev":{"tables":{"dog":{"read":1,"insert":false,"update":false,"delete":false,"attribute_permissions":[]}}}});
    let error = json!({"error":"Errors in the role permissions JSON provided","main_permissions":[],
        "schema_permissions":{"dev_dog":["Table READ permission must be a boolean"]}});
    assert_eq!(
        n.op(json!({"operation":"alter_role","id":"ghost","permission":bad})),
        (400, error.clone())
    );
    let good = json!({"super_user":false,"dev":{"tables":{"dog":{"read":true,"insert":false,"update":false,"delete":false,"attribute_permissions":[]}}}});
    n.ok(json!({"operation":"add_role","role":"r","permission":good}));
    assert_eq!(
        n.op(json!({"operation":"alter_role","id":"r","permission":bad})),
        (400, error)
    );
    let roles = n.ok(json!({"operation":"list_roles"}));
    assert_eq!(roles[0]["permission"], good, "{roles}");
}

/// Every error of one request is reported, in Harper's order and grouping (its messages from
/// `role_validation.js`): the role-wide ones first, then each table's.
#[test]
fn every_permission_error_of_a_role_is_reported_at_once() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1,"name":"x"}]}));
    let (s, b) = n.op(json!({"operation":"add_role","role":"r","permission":{
        "super_user":"yes",
        "structure_user":["dev","nodb"],
        "prod":{"tables":{}},
        "dev":{"tables":{
            "nope":{"read":true},
            "dog":{"read":false,"insert":null,"update":"no","colour":true,
                "attribute_permissions":[
                    {"attribute_name":"name","read":true,"insert":false,"size":1},
                    {"read":true},
                    {"attribute_name":"ghost","read":true,"insert":true,"update":true}]}}}}}));
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        b,
        json!({"error":"Errors in the role permissions JSON provided",
            "main_permissions":[
                "Value for 'super_user' permission must be a boolean",
                "database 'nodb' does not exist",
                "database 'prod' does not exist",
                "Table 'dev.nope' does not exist"],
            "schema_permissions":{"dev_dog":[
                "Invalid table permission key value 'colour'",
                "Missing table INSERT permission",
                "Table UPDATE permission must be a boolean",
                "Missing table DELETE permission",
                "Invalid attribute permission key value 'size'",
                "UPDATE attribute permission missing for 'name'",
                "Permission object in 'attribute_permission' missing an 'attribute_name'",
                "Invalid attribute 'ghost' in 'attribute_permissions'",
                "You have a conflict with TABLE permissions for 'dev.dog' being false and ATTRIBUTE permissions being true"]}})
    );
    assert_eq!(
        n.ok(json!({"operation":"list_roles"}))
            .as_array()
            .map(Vec::len),
        Some(1),
        "a refused role was stored"
    );
}

/// Harper's `describe` permission of an attribute is read, insert or update: an attribute a
/// role may only write is shown (a role needs to know what it may insert); a timestamp only
/// by its read flag.
#[test]
fn describe_shows_attributes_a_role_may_write_but_not_read() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1,"name":"x","age":1,"secret":1}]}));
    let attr = |name: &str, r: bool, i: bool, u: bool| json!({"attribute_name":name,"read":r,"insert":i,"update":u});
    n.ok(json!({"operation":"add_role","role":"r","permission":{"super_user":false,"dev":{"tables":{"dog":{
        "read":true,"insert":true,"update":true,"delete":false,"attribute_permissions":[
            attr("name", false, true, false), attr("age", true, false, false),
            attr("secret", false, false, false), attr("__createdtime__", false, true, true)]}}}}}));
    n.ok(json!({"operation":"add_user","role":"r","username":"u","password":"pw"}));
    let (s, t) = n.op_as(
        "u",
        "pw",
        json!({"operation":"describe_table","database":"dev","table":"dog"}),
    );
    assert_eq!(s, 200, "{t}");
    let names: Vec<&str> = t["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attribute"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "name", "age"], "{t}");
}
