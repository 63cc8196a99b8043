//! Users, roles, permissions and authentication over the operations API, against the real
//! binary: Harper's texts and shapes for 401/403/404/409 (spec §1.3, §1.4, §5.5 and the captures
//! add_role, add_user*, list_users, non_super_user_*, no_auth, unknown_user), Bearer tokens and
//! `authentication.authorizeLocal`.

mod common;
use common::*;
use serde_json::{json, Value};

const SUITE: u8 = 14;

const DENIED: &str =
    "This operation is not authorized due to role restrictions and/or invalid database items";

fn node() -> TestNode {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    n.ok(
        json!({"operation":"insert","database":"dev","table":"dog","records":[
            {"id":1,"name":"Penny","age":5},{"id":2,"name":"Harper","age":3}
        ]}),
    );
    n
}

fn table_perms(read: bool, insert: bool, update: bool, delete: bool) -> Value {
    json!({"read":read,"insert":insert,"update":update,"delete":delete,"attribute_permissions":[]})
}

/// Adds role `role` with `perms` on dev.dog and a user `<role>_user` (password `pw`) holding it.
fn role_and_user(n: &TestNode, role: &str, dog: Value) -> String {
    n.ok(json!({"operation":"add_role","role":role,
        "permission":{"super_user":false,"dev":{"tables":{"dog":dog}}}}));
    let user = format!("{role}_user");
    let r = n.ok(
        json!({"operation":"add_user","role":role,"username":user,"password":"pw","active":true}),
    );
    assert_eq!(r, json!({"message":format!("{user} successfully added")}));
    user
}

fn reader(n: &TestNode) -> String {
    role_and_user(n, "reader", table_perms(true, false, false, false))
}

fn denied_table(db: &str, table: &str, perms: &[&str]) -> Value {
    json!({"error":DENIED,
        "unauthorized_access":[{"schema":db,"table":table,"required_table_permissions":perms,"required_attribute_permissions":[]}],
        "invalid_schema_items":[]})
}

fn denied_super_user(handler: &str) -> Value {
    json!({"error":DENIED,
        "unauthorized_access":[format!("Operation '{handler}' is restricted to 'super_user' roles")],
        "invalid_schema_items":[]})
}

fn no_secrets(v: &Value) {
    let text = v.to_string();
    for k in [
        "\"password\"",
        "\"hash\"",
        "\"refresh_token\"",
        "\"hash_function\"",
    ] {
        assert!(!text.contains(k), "{k} exposed: {v}");
    }
}

#[test]
fn add_role_returns_the_stored_role_with_id_defaulting_to_its_name() {
    let n = node();
    let perm =
        json!({"super_user":false,"dev":{"tables":{"dog":table_perms(true,false,false,false)}}});
    let r = n.ok(json!({"operation":"add_role","role":"reader","permission":perm}));
    assert_eq!(r["role"], "reader", "{r}");
    assert_eq!(r["id"], "reader", "{r}");
    assert_eq!(r["permission"], perm, "{r}");
    assert!(
        r["__createdtime__"].is_number() && r["__updatedtime__"].is_number(),
        "{r}"
    );
    let r = n.ok(json!({"operation":"add_role","role":"writer","id":"w-1","permission":{"super_user":false}}));
    assert_eq!(r["id"], "w-1", "{r}");
    let (s, b) =
        n.op(json!({"operation":"add_role","role":"reader","permission":{"super_user":false}}));
    assert_eq!(
        (s, b),
        (
            409,
            json!({"error":"A role with name 'reader' already exists"})
        )
    );

    let roles = n.ok(json!({"operation":"list_roles"}));
    let mut names: Vec<&str> = roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["reader", "super_user", "writer"], "{roles}");
}

#[test]
fn add_user_duplicate_is_409_and_unknown_role_is_404() {
    let n = node();
    reader(&n);
    let cases = [
        (
            json!({"operation":"add_user","role":"reader","username":"reader_user","password":"other","active":true}),
            409,
            json!({"error":"User reader_user already exists"}),
        ),
        (
            json!({"operation":"add_user","role":"nope","username":"reader2","password":"x","active":true}),
            404,
            json!({"error":"nope role not found"}),
        ),
    ];
    for (req, status, body) in cases {
        let (s, b) = n.op(req.clone());
        assert_eq!((s, &b), (status, &body), "{req}");
    }
    // The duplicate did not replace the password; the refused user does not exist.
    assert_eq!(
        n.op_as("reader_user", "pw", json!({"operation":"user_info"}))
            .0,
        200
    );
    assert_eq!(
        n.op_as("reader_user", "other", json!({"operation":"user_info"}))
            .0,
        401
    );
    assert_eq!(
        n.op_as("reader2", "x", json!({"operation":"user_info"})).0,
        401
    );
}

#[test]
fn list_users_hides_passwords_and_expands_the_role() {
    let n = node();
    reader(&n);
    let users = n.ok(json!({"operation":"list_users"}));
    no_secrets(&users);
    let arr = users.as_array().unwrap();
    let mut names: Vec<&str> = arr
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["admin", "reader_user"], "{users}");
    for u in arr {
        assert_eq!(u["active"], true, "{u}");
        assert!(u["__createdtime__"].is_number(), "{u}");
        let role = &u["role"];
        assert!(role.is_object(), "role not expanded: {u}");
        assert!(
            role["id"].is_string() && role["permission"].is_object(),
            "{u}"
        );
    }
    let r = arr.iter().find(|u| u["username"] == "reader_user").unwrap();
    assert_eq!(r["role"]["role"], "reader");
    assert_eq!(
        r["role"]["permission"]["dev"]["tables"]["dog"]["read"],
        true
    );
    let a = arr.iter().find(|u| u["username"] == "admin").unwrap();
    assert_eq!(a["role"]["permission"]["super_user"], true);
}

#[test]
fn user_info_answers_the_caller_in_list_users_shape() {
    let n = node();
    let user = reader(&n);
    let (s, me) = n.op_as(&user, "pw", json!({"operation":"user_info"}));
    assert_eq!(s, 200, "{me}");
    no_secrets(&me);
    assert_eq!(me["username"], user.as_str());
    assert_eq!(me["role"]["role"], "reader");
    assert_eq!(me["role"]["permission"]["super_user"], false);
    let admin = n.ok(json!({"operation":"user_info"}));
    assert_eq!(admin["username"], "admin");
    assert_eq!(admin["role"]["permission"]["super_user"], true);
}

#[test]
fn alter_user_changes_password_role_and_active_flag() {
    let n = node();
    let user = reader(&n);
    role_and_user(&n, "writer", table_perms(true, true, true, true));

    // Harper 4.7's keys (captured: issue 7 d_alter_user_*); its txn_time is always 0,
    // Skerry's is the transaction's.
    let mut r = n.ok(json!({"operation":"alter_user","username":user,"password":"new-pw"}));
    assert!(r["txn_time"].as_f64().is_some_and(|t| t > 0.0), "{r}");
    r["txn_time"] = json!(0);
    assert_eq!(
        r.to_string(),
        json!({"message":"updated 1 of 1 records","txn_time":0,"update_hashes":[user],"skipped_hashes":[]}).to_string()
    );
    let (s, b) = n.op_as(&user, "pw", json!({"operation":"user_info"}));
    assert_eq!(
        (s, b),
        (401, json!({"error":"Login failed"})),
        "old password still works"
    );
    assert_eq!(
        n.op_as(&user, "new-pw", json!({"operation":"user_info"})).0,
        200
    );

    // A new role takes effect at once.
    let ins = json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":10}]});
    assert_eq!(n.op_as(&user, "new-pw", ins.clone()).0, 403);
    n.ok(json!({"operation":"alter_user","username":user,"role":"writer"}));
    let (s, b) = n.op_as(&user, "new-pw", ins);
    assert_eq!(s, 200, "{b}");

    let cases = [
        (
            json!({"operation":"alter_user","username":user,"role":"nope"}),
            404,
            "Update failed.  Requested 'nope' role not found.",
        ),
        (
            json!({"operation":"alter_user","username":user}),
            400,
            "nothing to update, must supply active, role or password to update",
        ),
        (
            json!({"operation":"alter_user","username":user,"password":""}),
            400,
            "password cannot be an empty string",
        ),
        (
            json!({"operation":"alter_user","username":user,"active":"no"}),
            400,
            "active must be true or false",
        ),
    ];
    for (req, status, msg) in cases {
        let (s, b) = n.op(req.clone());
        assert_eq!((s, b), (status, json!({ "error": msg })), "{req}");
    }

    n.ok(json!({"operation":"alter_user","username":user,"active":false}));
    let (s, b) = n.op_as(&user, "new-pw", json!({"operation":"user_info"}));
    assert_eq!(
        (s, b),
        (
            401,
            json!({"error":"Cannot complete request: User is inactive"})
        ),
        "an inactive user was let in"
    );
    n.ok(json!({"operation":"alter_user","username":user,"active":true}));
    assert_eq!(
        n.op_as(&user, "new-pw", json!({"operation":"user_info"})).0,
        200
    );
}

#[test]
fn drop_user_removes_the_login_and_drop_role_is_refused_while_users_hold_it() {
    let n = node();
    let user = reader(&n);
    let (s, b) = n.op(json!({"operation":"drop_role","id":"reader"}));
    assert_ne!(s, 200, "a role with users was dropped: {b}");
    assert!(b["error"].is_string(), "{b}");
    assert_eq!(
        n.op_as(&user, "pw", json!({"operation":"user_info"})).0,
        200,
        "the user lost its role"
    );
    let roles = n.ok(json!({"operation":"list_roles"}));
    assert!(
        roles
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "reader"),
        "{roles}"
    );

    let r = n.ok(json!({"operation":"drop_user","username":user}));
    assert_eq!(r, json!({"message":format!("{user} successfully deleted")}));
    let (s, b) = n.op_as(&user, "pw", json!({"operation":"user_info"}));
    assert_eq!((s, b), (401, json!({"error":"Login failed"})));
    let (s, b) = n.op(json!({"operation":"drop_user","username":user}));
    assert_eq!(
        (s, b),
        (404, json!({"error":format!("User {user} does not exist")}))
    );
    let users = n.ok(json!({"operation":"list_users"}));
    assert_eq!(users.as_array().unwrap().len(), 1, "{users}");

    let r = n.ok(json!({"operation":"drop_role","id":"reader"}));
    assert_eq!(r, json!({"message":"reader successfully deleted"}));
    let (s, b) = n.op(json!({"operation":"drop_role","id":"reader"}));
    assert_eq!((s, b), (404, json!({"error":"Role not found"})));
    let roles = n.ok(json!({"operation":"list_roles"}));
    assert!(
        !roles
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "reader"),
        "{roles}"
    );
}

#[test]
fn alter_role_changes_permissions_at_once() {
    let n = node();
    let user = reader(&n);
    let ins = json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":20}]});
    assert_eq!(n.op_as(&user, "pw", ins.clone()).0, 403);
    let r = n.ok(json!({"operation":"alter_role","id":"reader","role":"reader",
        "permission":{"super_user":false,"dev":{"tables":{"dog":table_perms(true,true,false,false)}}}}));
    assert_eq!(r["id"], "reader", "{r}");
    assert_eq!(
        r["permission"]["dev"]["tables"]["dog"]["insert"], true,
        "{r}"
    );
    let (s, b) = n.op_as(&user, "pw", ins);
    assert_eq!(s, 200, "{b}");
    let (s, b) =
        n.op(json!({"operation":"alter_role","id":"nope","permission":{"super_user":false}}));
    assert_eq!((s, b), (400, json!({"error":"Invalid role id"})));
}

/// Each role × operation: allowed ones take effect, refused ones answer Harper's 403 naming the
/// missing table permissions and change nothing.
#[test]
fn table_permissions_are_enforced_per_operation_with_harpers_403_shape() {
    let n = node();
    n.ok(
        json!({"operation":"insert","database":"dev","table":"dog","records":
        (100..130).map(|i| json!({"id":i,"name":"x"})).collect::<Vec<_>>()}),
    );
    let roles = [
        ("r_read", table_perms(true, false, false, false)),
        ("r_insert", table_perms(false, true, false, false)),
        ("r_update", table_perms(false, false, true, false)),
        ("r_delete", table_perms(false, false, false, true)),
        ("r_upsert", table_perms(false, true, true, false)),
    ];
    for (role, perms) in &roles {
        role_and_user(&n, role, perms.clone());
    }
    let mut failures = Vec::new();
    // (role, operation, missing permissions; empty = allowed)
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        ("r_read", "read", vec![]),
        ("r_read", "insert", vec!["insert"]),
        ("r_read", "update", vec!["update"]),
        ("r_read", "upsert", vec!["insert", "update"]),
        ("r_read", "delete", vec!["delete"]),
        ("r_insert", "read", vec!["read"]),
        ("r_insert", "insert", vec![]),
        ("r_insert", "upsert", vec!["update"]),
        ("r_insert", "delete", vec!["delete"]),
        ("r_update", "update", vec![]),
        ("r_update", "insert", vec!["insert"]),
        ("r_update", "upsert", vec!["insert"]),
        ("r_delete", "delete", vec![]),
        ("r_delete", "update", vec!["update"]),
        ("r_upsert", "upsert", vec![]),
        ("r_upsert", "read", vec!["read"]),
    ];
    for (i, (role, op, missing)) in cases.into_iter().enumerate() {
        let user = format!("{role}_user");
        // A fresh id to insert, and a pre-inserted record (100..130) to update or delete.
        let next_id = 201 + i as i64;
        let victim = 101 + i as i64;
        let (req, changed): (Value, Box<dyn Fn() -> bool>) = match op {
            "read" => (
                json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1],"get_attributes":["*"]}),
                Box::new(|| false),
            ),
            "insert" | "upsert" => {
                let id = next_id;
                (
                    json!({"operation":op,"database":"dev","table":"dog","records":[{"id":id,"name":role}]}),
                    Box::new({
                        let n = &n;
                        move || {
                            n.ok(json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[id],"get_attributes":["id"]})) != json!([])
                        }
                    }),
                )
            }
            "update" => {
                let id = victim;
                (
                    json!({"operation":"update","database":"dev","table":"dog","records":[{"id":id,"name":role}]}),
                    Box::new({
                        let n = &n;
                        move || {
                            n.ok(json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[id],"get_attributes":["name"]})) != json!([{"name":"x"}])
                        }
                    }),
                )
            }
            "delete" => {
                let id = victim;
                (
                    json!({"operation":"delete","database":"dev","table":"dog","ids":[id]}),
                    Box::new({
                        let n = &n;
                        move || {
                            n.ok(json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[id],"get_attributes":["id"]})) == json!([])
                        }
                    }),
                )
            }
            _ => unreachable!(),
        };
        let (s, b) = n.op_as(&user, "pw", req.clone());
        if missing.is_empty() {
            if s != 200 {
                failures.push(format!("{role} {op}: refused with {s} {b}"));
            } else if op == "read" && b[0]["name"] != "Penny" {
                failures.push(format!("{role} {op}: wrong answer {b}"));
            } else if op != "read" && !changed() {
                failures.push(format!("{role} {op}: answered 200 but changed nothing"));
            }
        } else {
            let want = denied_table("dev", "dog", &missing);
            if (s, &b) != (403, &want) {
                failures.push(format!("{role} {op}: expected 403 {want}, got {s} {b}"));
            }
            if changed() {
                failures.push(format!("{role} {op}: refused or not, it took effect"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "permission mismatches:\n{}",
        failures.join("\n")
    );
}

/// Harper reports a table the role has no permissions on exactly like a table that does not
/// exist (`invalid_schema_items`), so a plain role cannot probe which tables exist.
#[test]
fn table_outside_the_role_answers_like_a_missing_table() {
    let n = node();
    let user = reader(&n);
    n.ok(json!({"operation":"create_table","database":"dev","table":"cat","primary_key":"id"}));
    n.ok(json!({"operation":"insert","database":"dev","table":"cat","records":[{"id":1}]}));
    n.ok(json!({"operation":"create_table","database":"prod","table":"secret","primary_key":"id"}));
    let invalid =
        |item: &str| json!({"error":DENIED,"unauthorized_access":[],"invalid_schema_items":[item]});
    let search = |db: &str, table: &str| json!({"operation":"search_by_id","database":db,"table":table,"ids":[1],"get_attributes":["*"]});
    // (request, Harper's 403 body): an existing table without permissions and a missing one
    // must be indistinguishable.
    let cases = [
        (
            search("dev", "cat"),
            invalid("Table 'dev.cat' does not exist"),
        ),
        (
            search("dev", "nope"),
            invalid("Table 'dev.nope' does not exist"),
        ),
        (
            search("prod", "secret"),
            invalid("database 'prod' does not exist"),
        ),
        (
            search("nodb", "secret"),
            invalid("database 'nodb' does not exist"),
        ),
        (
            json!({"operation":"insert","database":"dev","table":"cat","records":[{"id":2}]}),
            invalid("Table 'dev.cat' does not exist"),
        ),
        (
            json!({"operation":"describe_table","database":"dev","table":"cat"}),
            invalid("Table 'dev.cat' does not exist"),
        ),
    ];
    let mut failures = Vec::new();
    for (req, want) in cases {
        let (s, b) = n.op_as(&user, "pw", req.clone());
        if (s, &b) != (403, &want) {
            failures.push(format!("{req}:\n  expected 403 {want}\n  got      {s} {b}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        n.ok(json!({"operation":"search_by_id","database":"dev","table":"cat","ids":[2],"get_attributes":["id"]})),
        json!([])
    );
}

#[test]
fn super_user_operations_answer_403_naming_harpers_handler() {
    let n = node();
    let user = reader(&n);
    let cases = [
        (json!({"operation":"list_users"}), "listUsersExternal"),
        (
            json!({"operation":"add_user","role":"reader","username":"x","password":"y","active":true}),
            "addUser",
        ),
        (
            json!({"operation":"alter_user","username":"admin","password":"hijack"}),
            "alterUser",
        ),
        (
            json!({"operation":"drop_user","username":"admin"}),
            "dropUser",
        ),
        (json!({"operation":"list_roles"}), "listRoles"),
        (
            json!({"operation":"add_role","role":"evil","permission":{"super_user":true}}),
            "addRole",
        ),
        (
            json!({"operation":"alter_role","id":"reader","permission":{"super_user":true}}),
            "alterRole",
        ),
        (json!({"operation":"drop_role","id":"reader"}), "dropRole"),
        (
            json!({"operation":"create_database","database":"x"}),
            "createSchema",
        ),
        (
            json!({"operation":"drop_database","database":"dev"}),
            "dropSchema",
        ),
        (
            json!({"operation":"create_table","database":"dev","table":"t","primary_key":"id"}),
            "createTable",
        ),
        (
            json!({"operation":"drop_table","database":"dev","table":"dog"}),
            "dropTable",
        ),
        (
            json!({"operation":"drop_attribute","database":"dev","table":"dog","attribute":"name"}),
            "dropAttribute",
        ),
    ];
    for (req, handler) in cases {
        let (s, b) = n.op_as(&user, "pw", req.clone());
        assert_eq!((s, &b), (403, &denied_super_user(handler)), "{req}");
    }
    // Nothing changed.
    assert_eq!(n.ok(json!({"operation":"user_info"}))["username"], "admin");
    let all = n.ok(json!({"operation":"describe_all"}));
    assert_eq!(
        all.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["dev"],
        "{all}"
    );
    let t = n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    assert!(t["attributes"].to_string().contains("\"name\""), "{t}");
    assert_eq!(
        n.ok(json!({"operation":"list_users"}))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let roles = n.ok(json!({"operation":"list_roles"}));
    assert!(
        roles
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["role"] != "evil"),
        "{roles}"
    );
    let reader_role = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "reader")
        .unwrap();
    assert_eq!(reader_role["permission"]["super_user"], false);
}

#[test]
fn missing_or_wrong_credentials_answer_401_with_harpers_texts() {
    let n = node();
    reader(&n);
    let body = br#"{"operation":"describe_all"}"#;
    let addr = n.addr();
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "Must login"),
        (Some(basic("admin", "wrong")), "Login failed"),
        (Some(basic("nobody", "x")), "Login failed"),
        (Some(basic("reader_user", "password")), "Login failed"),
        (Some("Basic !!!not-base64".to_string()), "Login failed"),
        (Some("Bearer not.a.token".to_string()), "invalid token"),
    ];
    for (auth, msg) in cases {
        let (s, b) = post(&addr, auth.as_deref(), body);
        assert_eq!(
            (s, b),
            (401, json!({ "error": msg })),
            "Authorization: {auth:?}"
        );
    }
}

#[test]
fn authentication_tokens_work_as_bearer_and_refresh() {
    let n = node();
    let user = reader(&n);
    let addr = n.addr();
    // Credentials in the body; no Authorization header needed.
    let (s, t) = post_json(
        &addr,
        None,
        json!({"operation":"create_authentication_tokens","username":"admin","password":"password"}),
    );
    assert_eq!(s, 200, "{t}");
    let op_token = t["operation_token"].as_str().unwrap().to_string();
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    let bearer = |tok: &str| format!("Bearer {tok}");
    let (s, b) = post(
        &addr,
        Some(&bearer(&op_token)),
        br#"{"operation":"list_users"}"#,
    );
    assert_eq!(s, 200, "{b}");

    // Harper: refreshing is an authenticated request. The refresh token itself as the Bearer
    // token, or a body token with credentials in the header; a body token alone is not enough.
    let (s, r) = post_json(
        &addr,
        None,
        json!({"operation":"refresh_operation_token","refresh_token":refresh}),
    );
    assert_eq!((s, r), (401, json!({"error":"Must login"})));
    let (s, r) = post_json(
        &addr,
        Some(&basic(USER, PASS)),
        json!({"operation":"refresh_operation_token","refresh_token":refresh}),
    );
    assert_eq!(s, 200, "{r}");
    let (s, r) = post_json(
        &addr,
        Some(&bearer(&refresh)),
        json!({"operation":"refresh_operation_token"}),
    );
    assert_eq!(s, 200, "{r}");
    let fresh = r["operation_token"].as_str().unwrap();
    let (s, b) = post(&addr, Some(&bearer(fresh)), br#"{"operation":"user_info"}"#);
    assert_eq!((s, b["username"].clone()), (200, json!("admin")));

    // A refresh token is not an operation token, and garbage is refused.
    let (s, _) = post(
        &addr,
        Some(&bearer(&refresh)),
        br#"{"operation":"user_info"}"#,
    );
    assert_eq!(s, 401, "a refresh token was accepted as an operation token");
    let mut tampered = op_token.clone();
    tampered.push('x');
    let (s, b) = post(
        &addr,
        Some(&bearer(&tampered)),
        br#"{"operation":"user_info"}"#,
    );
    assert_eq!((s, b), (401, json!({"error":"invalid token"})));
    let (s, b) = post_json(
        &addr,
        Some(&basic(USER, PASS)),
        json!({"operation":"refresh_operation_token","refresh_token":"garbage"}),
    );
    assert_eq!((s, b), (401, json!({"error":"invalid token"})));

    // Wrong password in the body.
    let (s, b) = post_json(
        &addr,
        None,
        json!({"operation":"create_authentication_tokens","username":"admin","password":"nope"}),
    );
    assert_eq!((s, b), (401, json!({"error":"invalid credentials"})));

    // A plain user's token carries that user's permissions, and dies with the user.
    let (_, t) = post_json(
        &addr,
        None,
        json!({"operation":"create_authentication_tokens","username":user,"password":"pw"}),
    );
    let rt = t["operation_token"].as_str().unwrap().to_string();
    let (s, b) = post(
        &addr,
        Some(&bearer(&rt)),
        json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":9}]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!((s, b), (403, denied_table("dev", "dog", &["insert"])));
    let (s, _) = post(&addr, Some(&bearer(&rt)), json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1],"get_attributes":["id"]}).to_string().as_bytes());
    assert_eq!(s, 200);
    n.ok(json!({"operation":"drop_user","username":user}));
    let (s, _) = post(&addr, Some(&bearer(&rt)), br#"{"operation":"user_info"}"#);
    assert_eq!(s, 401, "a dropped user's token still works");
}

#[test]
fn inactive_user_cannot_get_tokens_or_use_old_ones() {
    let n = node();
    let user = reader(&n);
    let addr = n.addr();
    let (_, t) = post_json(
        &addr,
        None,
        json!({"operation":"create_authentication_tokens","username":user,"password":"pw"}),
    );
    let tok = format!("Bearer {}", t["operation_token"].as_str().unwrap());
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    n.ok(json!({"operation":"alter_user","username":user,"active":false}));
    let (s, _) = post(&addr, Some(&tok), br#"{"operation":"user_info"}"#);
    assert_eq!(s, 401, "an inactive user's token still works");
    let (s, b) = post_json(
        &addr,
        None,
        json!({"operation":"refresh_operation_token","refresh_token":refresh}),
    );
    assert_eq!(s, 401, "an inactive user refreshed a token: {b}");
    let (s, b) = post_json(
        &addr,
        None,
        json!({"operation":"create_authentication_tokens","username":user,"password":"pw"}),
    );
    assert_eq!(s, 401, "an inactive user got tokens: {b}");
}

#[test]
fn authorize_local_lets_loopback_requests_without_credentials_act_as_super_user() {
    let ip = &ips(SUITE, 1)[0];
    let n = TestNode::start(ip, "authentication:\n  authorizeLocal: true");
    let addr = n.addr();
    let (s, b) = post(&addr, None, br#"{"operation":"list_users"}"#);
    assert_eq!(s, 200, "{b}");
    let (s, b) = post_json(
        &addr,
        None,
        json!({"operation":"create_table","database":"dev","table":"dog","primary_key":"id"}),
    );
    assert_eq!(s, 200, "{b}");
    // Credentials that are sent are still checked.
    let (s, b) = post(
        &addr,
        Some(&basic("admin", "wrong")),
        br#"{"operation":"list_users"}"#,
    );
    assert_eq!((s, b), (401, json!({"error":"Login failed"})));

    // Without the setting the same request must log in.
    let other = TestNode::start(&ips(SUITE, 1)[0], "");
    let (s, b) = post(&other.addr(), None, br#"{"operation":"list_users"}"#);
    assert_eq!((s, b), (401, json!({"error":"Must login"})));
}

#[test]
fn system_tables_are_readable_by_super_user_only_and_hold_no_clear_passwords() {
    let n = node();
    let user = reader(&n);
    let users = n.ok(json!({"operation":"search_by_value","database":"system","table":"hdb_user","attribute":"username","value":"*"}));
    let arr = users.as_array().unwrap();
    let mut names: Vec<&str> = arr
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["admin", "reader_user"], "{users}");
    let text = users.to_string();
    assert!(
        !text.contains("\"pw\"") && !text.contains("\"password\":\"password\""),
        "clear password stored: {users}"
    );
    let roles = n.ok(json!({"operation":"search_by_value","database":"system","table":"hdb_role","attribute":"id","value":"*"}));
    assert!(
        roles
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["role"] == "reader"),
        "{roles}"
    );

    let (s, b) = n.op_as(&user, "pw", json!({"operation":"search_by_value","database":"system","table":"hdb_user","attribute":"username","value":"*"}));
    assert_eq!(s, 403, "a plain user read system.hdb_user: {b}");
    // Writes to system tables through data operations are refused for a plain user.
    let (s, b) = n.op_as(&user, "pw", json!({"operation":"insert","database":"system","table":"hdb_user","records":[{"username":"evil","role":"super_user","active":true}]}));
    assert_eq!(s, 403, "{b}");
    let (s, _) = n.op_as("evil", "", json!({"operation":"user_info"}));
    assert_eq!(s, 401);
}

#[test]
fn describe_shows_a_plain_role_only_its_tables() {
    let n = node();
    let user = reader(&n);
    n.ok(json!({"operation":"create_table","database":"dev","table":"cat","primary_key":"id"}));
    n.ok(json!({"operation":"create_table","database":"prod","table":"secret","primary_key":"id"}));
    let (s, all) = n.op_as(&user, "pw", json!({"operation":"describe_all"}));
    assert_eq!(s, 200, "{all}");
    let dbs: Vec<&String> = all.as_object().unwrap().keys().collect();
    assert_eq!(dbs, ["dev"], "{all}");
    let tables: Vec<&String> = all["dev"].as_object().unwrap().keys().collect();
    assert_eq!(tables, ["dog"], "{all}");
    let (s, t) = n.op_as(
        &user,
        "pw",
        json!({"operation":"describe_table","database":"dev","table":"dog"}),
    );
    assert_eq!((s, t["record_count"].clone()), (200, json!(2)), "{t}");
}

/// Harper's structure_user: `true` may create and drop databases; a list of databases gives
/// full table rights (create/drop tables and attributes, and CRUD) inside those databases only.
#[test]
fn structure_user_manages_tables_of_its_databases_only() {
    let n = node();
    n.ok(json!({"operation":"add_role","role":"builder","permission":{"super_user":false,"structure_user":["dev"]}}));
    n.ok(json!({"operation":"add_user","role":"builder","username":"b1","password":"pw","active":true}));
    n.ok(json!({"operation":"add_role","role":"architect","permission":{"super_user":false,"structure_user":true}}));
    n.ok(json!({"operation":"add_user","role":"architect","username":"a1","password":"pw","active":true}));
    let mut failures = Vec::new();
    let mut check = |user: &str, req: Value, status: u16, body: Option<Value>| {
        let (s, b) = n.op_as(user, "pw", req.clone());
        if s != status || body.as_ref().is_some_and(|want| *want != b) {
            failures.push(format!(
                "{user} {req}: expected {status} {body:?}, got {s} {b}"
            ));
        }
    };
    check(
        "b1",
        json!({"operation":"create_table","database":"dev","table":"built","primary_key":"id"}),
        200,
        None,
    );
    check(
        "b1",
        json!({"operation":"insert","database":"dev","table":"built","records":[{"id":1}]}),
        200,
        None,
    );
    check(
        "b1",
        json!({"operation":"search_by_id","database":"dev","table":"built","ids":[1],"get_attributes":["id"]}),
        200,
        Some(json!([{"id":1}])),
    );
    check(
        "b1",
        json!({"operation":"create_attribute","database":"dev","table":"built","attribute":"x"}),
        200,
        None,
    );
    check(
        "b1",
        json!({"operation":"create_table","database":"prod","table":"t","primary_key":"id"}),
        403,
        Some(
            json!({"error":DENIED,"unauthorized_access":["User does not have access to perform 'create_table' against schema 'prod'"],"invalid_schema_items":[]}),
        ),
    );
    check(
        "b1",
        json!({"operation":"create_database","database":"newdb"}),
        403,
        Some(denied_super_user("createSchema")),
    );
    check(
        "b1",
        json!({"operation":"drop_table","database":"dev","table":"built"}),
        200,
        None,
    );
    check(
        "a1",
        json!({"operation":"create_database","database":"newdb"}),
        200,
        None,
    );
    check(
        "a1",
        json!({"operation":"create_table","database":"newdb","table":"t","primary_key":"id"}),
        200,
        None,
    );
    check(
        "a1",
        json!({"operation":"drop_database","database":"newdb"}),
        200,
        None,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
