//! A first end-to-end check that the harness and the binary work together.

mod common;
use common::*;
use serde_json::json;

#[test]
fn node_starts_answers_and_stops_cleanly_with_exit_zero() {
    let ip = &ips(11, 1)[0];
    let mut n = TestNode::start(ip, "");
    create_dog_table(&n);
    let r = n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1}]}));
    assert_eq!(r["message"], "inserted 1 of 1 records");
    assert_eq!(n.stop(), Some(0));
}

#[test]
fn read_audit_log_lists_each_request_as_one_transaction() {
    let ip = &ips(11, 1)[0];
    let n = TestNode::start(ip, "");
    create_dog_table(&n);
    n.ok(
        json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1},{"id":2}]}),
    );
    n.ok(json!({"operation":"delete","database":"dev","table":"dog","ids":[1]}));
    let log = n.ok(json!({"operation":"read_audit_log","database":"dev","table":"dog"}));
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["operation"], "insert");
    assert_eq!(log[0]["user_name"], "admin");
    assert_eq!(log[0]["hash_values"], json!([1, 2]));
    assert_eq!(log[1]["operation"], "delete");
    let only2 = n.ok(json!({"operation":"read_audit_log","database":"dev","table":"dog","search_type":"hash_value","search_values":[2]}));
    assert_eq!(only2["2"].as_array().unwrap().len(), 1, "{only2}");
}
