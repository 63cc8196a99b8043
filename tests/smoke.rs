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
