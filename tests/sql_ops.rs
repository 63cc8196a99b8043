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

/// Every pair of `left` x `right` records whose `k` are equal and not null, as the outer joins
/// must answer it: (left id, right id), with None for the side without a match.
fn nested_loop(
    left: &[(u64, Option<u64>)],
    right: &[(u64, Option<u64>)],
    keep_left: bool,
    keep_right: bool,
) -> Vec<(Option<u64>, Option<u64>)> {
    let mut out = Vec::new();
    let mut right_hit = vec![false; right.len()];
    for (lid, lk) in left {
        let mut hit = false;
        for (j, (rid, rk)) in right.iter().enumerate() {
            if lk.is_some() && lk == rk {
                out.push((Some(*lid), Some(*rid)));
                hit = true;
                right_hit[j] = true;
            }
        }
        if !hit && keep_left {
            out.push((Some(*lid), None));
        }
    }
    if keep_right {
        for (j, (rid, _)) in right.iter().enumerate() {
            if !right_hit[j] {
                out.push((None, Some(*rid)));
            }
        }
    }
    out
}

fn pairs(v: &Value) -> Vec<(Option<u64>, Option<u64>)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["lid"].as_u64(), r["rid"].as_u64()))
        .collect()
}

#[test]
fn right_full_and_cross_joins_equal_a_nested_loop_in_harpers_row_order() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    n.ok(json!({"operation":"create_database","database":"j"}));
    for t in ["l", "r"] {
        n.ok(json!({"operation":"create_table","database":"j","table":t,"primary_key":"id"}));
    }
    // Left keys 0..40 (every seventh record without one), right keys 20..60 in steps of 2:
    // matches, several per key, and unmatched rows on both sides.
    let left: Vec<(u64, Option<u64>)> = (1..=300)
        .map(|i| (i, (i % 7 != 0).then_some(i % 40)))
        .collect();
    let right: Vec<(u64, Option<u64>)> = (1..=60).map(|i| (i, Some(20 + i % 20 * 2))).collect();
    for (t, rows) in [("l", &left), ("r", &right)] {
        let records: Vec<Value> = rows
            .iter()
            .map(|(id, k)| match k {
                Some(k) => json!({"id": id, "k": k}),
                None => json!({"id": id}),
            })
            .collect();
        n.ok(json!({"operation":"insert","database":"j","table":t,"records":records}));
    }
    // Without ORDER BY the order itself is pinned: the left rows in key order with their
    // matches, then the right rows nothing matched (Harper's order, j_right / e_full_join).
    for (join, keep_left, keep_right) in [
        ("RIGHT JOIN", false, true),
        ("RIGHT OUTER JOIN", false, true),
        ("FULL OUTER JOIN", true, true),
        ("LEFT JOIN", true, false),
        ("INNER JOIN", false, false),
    ] {
        let got = sql(
            &n,
            &format!("SELECT l.id AS lid, r.id AS rid FROM j.l l {join} j.r r ON l.k = r.k"),
        );
        let want = nested_loop(&left, &right, keep_left, keep_right);
        assert!(want.len() > 100, "{join}: {}", want.len());
        assert_eq!(pairs(&got), want, "{join}");
    }
    // WHERE applies after the outer join: right rows without a match are still found.
    let got = sql(
        &n,
        "SELECT l.id AS lid, r.id AS rid FROM j.l l RIGHT JOIN j.r r ON l.k = r.k WHERE l.id IS NULL",
    );
    let want: Vec<_> = nested_loop(&left, &right, false, true)
        .into_iter()
        .filter(|(l, _)| l.is_none())
        .collect();
    assert!(!want.is_empty());
    assert_eq!(pairs(&got), want);
    // CROSS JOIN and the comma join: the whole product, WHERE narrowing either side.
    let got = sql(
        &n,
        "SELECT l.id AS lid, r.id AS rid FROM j.l l CROSS JOIN j.r r WHERE l.id <= 3",
    );
    assert_eq!(got.as_array().unwrap().len(), 3 * 60);
    let got = sql(
        &n,
        "SELECT l.id AS lid, r.id AS rid FROM j.l l, j.r r WHERE l.id < 3 AND r.id > 58 ORDER BY l.id, r.id",
    );
    assert_eq!(
        pairs(&got),
        vec![
            (Some(1), Some(59)),
            (Some(1), Some(60)),
            (Some(2), Some(59)),
            (Some(2), Some(60)),
        ]
    );
    let count = sql(&n, "SELECT COUNT(*) AS n FROM j.l l CROSS JOIN j.r r");
    assert_eq!(count, json!([{"n": 300 * 60}]));
}

#[test]
fn regexp_errors_are_400s_naming_the_pattern_and_regexp_drives_writes() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    let long = format!("{}!", "a".repeat(5000));
    n.ok(
        json!({"operation":"insert","database":"dev","table":"dog","records":[
        {"id":1,"name":"Harper","pat":"^H"},
        {"id":2,"name":"Penny","pat":"("},
        {"id":3,"name":long,"pat":"x"}]}),
    );
    // A backtracking-bound pattern fails the request promptly with a 400, not a hung thread.
    let start = std::time::Instant::now();
    let (status, body) = n.op(json!({"operation":"sql",
        "sql":"SELECT id FROM dev.dog WHERE name REGEXP '(a+)+(?<=b)'"}));
    assert_eq!(status, 400, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("'(a+)+(?<=b)'") && msg.contains("backtracking"),
        "{msg}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    // A pattern read from a column is compiled per row: an invalid one is a 400 naming it.
    let (status, body) = n.op(json!({"operation":"sql",
        "sql":"SELECT id FROM dev.dog WHERE name REGEXP pat ORDER BY id"}));
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error":"invalid regular expression '(': Parsing error at position 1: Opening parenthesis without closing parenthesis"})
        )
    );
    assert_eq!(
        sql(
            &n,
            "SELECT id FROM dev.dog WHERE id = 1 AND name REGEXP pat"
        ),
        json!([{"id":1}])
    );
    // REGEXP chooses the rows of UPDATE and DELETE too.
    let r = sql(
        &n,
        "UPDATE dev.dog SET age = 9 WHERE REGEXP_LIKE(name, '^p', 'i')",
    );
    assert_eq!(r["update_hashes"], json!([2]));
    let r = sql(&n, "DELETE FROM dev.dog WHERE name REGEXP '^a+!$'");
    assert_eq!(r["deleted_hashes"], json!([3]));
    assert_eq!(
        sql(&n, "SELECT id, age FROM dev.dog ORDER BY id"),
        json!([{"id":1,"age":null},{"id":2,"age":9}])
    );
    // A missing value matches nothing, not even the empty pattern (Harper reads it as ''); a
    // number is matched by its text (Harper: 500).
    assert_eq!(
        sql(&n, "SELECT id, age REGEXP '' AS m FROM dev.dog ORDER BY id"),
        json!([{"id":1,"m":false},{"id":2,"m":true}])
    );
    assert_eq!(
        sql(&n, "SELECT id FROM dev.dog WHERE age REGEXP '^9$'"),
        json!([{"id":2}])
    );
}
