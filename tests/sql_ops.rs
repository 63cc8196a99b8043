//! The `sql` operation beyond Harper's captured answers: SQL writes replicate like any write
//! (one transaction each), and large tables stream, sort, group and page correctly.

mod common;
use common::cluster::{add_node, refs, start_all, wait_mesh, T};
use common::*;
use serde_json::{json, Value};

const SUITE: u8 = 27;

fn sql(n: &TestNode, q: &str) -> Value {
    n.ok(json!({"operation":"sql","sql": q}))
}

#[test]
fn sql_writes_replicate_to_a_peer_and_each_is_one_transaction() {
    let nodes = start_all(&ips(SUITE, 2));
    let (a, b) = (&nodes[0], &nodes[1]);
    for n in &nodes {
        create_dog_table(n);
    }
    add_node(a, &b.ip);
    wait_mesh(&refs(&nodes), &["system", "dev"]);

    let r = sql(
        a,
        "INSERT INTO dev.dog (id, name, age) VALUES (1, 'Harper', 5), (2, 'Penny', 3)",
    );
    assert_eq!(
        r,
        json!({"message":"inserted 2 of 2 records","inserted_hashes":[1,2],"skipped_hashes":[]})
    );
    let r = sql(a, "UPDATE dev.dog SET age = age + 1 WHERE name = 'Penny'");
    assert_eq!(
        r,
        json!({"message":"updated 1 of 1 records","update_hashes":[2],"skipped_hashes":[]})
    );
    let r = sql(a, "DELETE FROM dev.dog WHERE id = 1");
    assert_eq!(
        r,
        json!({"message":"1 of 1 record successfully deleted","deleted_hashes":[1],"skipped_hashes":[]})
    );
    // Until the first record arrives B's table has no `name` attribute and answers Harper's
    // 500 "unknown column name", so wait on the whole answer, not on `ok`.
    let read_b = json!({"operation":"sql","sql":"SELECT id, name, age FROM dev.dog"});
    let want = (200, json!([{"id":2,"name":"Penny","age":4}]));
    assert!(
        wait_until(T, || b.op(read_b.clone()) == want),
        "B answers {:?}",
        b.op(read_b.clone())
    );
    // One audit entry (one transaction) per statement, with its kind (audit format 3): the
    // insert of two records, the update and the delete.
    let log = a.ok(json!({"operation":"read_audit_log","database":"dev","table":"dog"}));
    let ops: Vec<(&str, usize)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap(),
                e["hash_values"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(ops, vec![("insert", 2), ("update", 1), ("delete", 1)]);
}

#[test]
fn large_tables_stream_sort_group_and_page_through_sql() {
    let n = TestNode::start(&ips(SUITE, 3)[2], "");
    n.ok(json!({"operation":"create_database","database":"dev"}));
    n.ok(json!({"operation":"create_table","database":"dev","table":"big","primary_key":"id"}));
    let total = 3000u64;
    for chunk in 0..3 {
        let records: Vec<Value> = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| json!({"id": i, "score": i % 100, "name": format!("n{i:05}")}))
            .collect();
        n.ok(json!({"operation":"insert","database":"dev","table":"big","records":records}));
    }
    let all = sql(&n, "SELECT id FROM dev.big");
    assert_eq!(all.as_array().unwrap().len() as u64, total);

    let top = sql(
        &n,
        "SELECT id, score FROM dev.big ORDER BY score DESC, id LIMIT 3 OFFSET 1",
    );
    assert_eq!(
        top,
        json!([{"id":199,"score":99},{"id":299,"score":99},{"id":399,"score":99}])
    );

    // Indexed range: the same rows as search_by_conditions.
    let range = sql(
        &n,
        "SELECT id FROM dev.big WHERE score BETWEEN 10 AND 11 ORDER BY id",
    );
    let nosql = n.ok(
        json!({"operation":"search_by_conditions","database":"dev","table":"big",
        "get_attributes":["id"],"sort":{"attribute":"id"},
        "conditions":[{"attribute":"score","comparator":"between","value":[10,11]}]}),
    );
    assert_eq!(range, nosql);
    assert_eq!(range.as_array().unwrap().len(), 60);

    let groups = sql(
        &n,
        "SELECT score, COUNT(*) AS n, MIN(id) AS first FROM dev.big WHERE score < 3 GROUP BY score ORDER BY score",
    );
    assert_eq!(
        groups,
        json!([{"score":0,"n":30,"first":0},{"score":1,"n":30,"first":1},{"score":2,"n":30,"first":2}])
    );

    let page = sql(&n, "SELECT id FROM dev.big WHERE id >= 2990 LIMIT 5");
    assert_eq!(page.as_array().unwrap().len(), 5);
    let point = sql(&n, "SELECT name FROM dev.big WHERE id = 1234");
    assert_eq!(point, json!([{"name":"n01234"}]));
    let distinct = sql(&n, "SELECT DISTINCT score FROM dev.big WHERE score >= 98");
    assert_eq!(distinct.as_array().unwrap().len(), 2);
}
