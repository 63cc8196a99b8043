//! Record writes and reads over the operations API, against the real binary: Harper's response
//! shapes for insert/update/upsert/delete (exactly Harper 4.7's keys; `new_attributes` and
//! `txn_time` only with `"write_details": true`), timestamps and transaction times, and every
//! read: search_by_id,
//! search_by_value with wildcards, search_by_conditions with every comparator, groups, paging
//! and sorting, and secondary indexes that never return stale values.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

const SUITE: u8 = 13;

fn node() -> TestNode {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    n
}

/// The search dataset: every record has every attribute, so comparators are unambiguous.
fn dogs(n: &TestNode) {
    n.ok(
        json!({"operation":"insert","database":"dev","table":"dog","records":[
            {"id":1,"name":"Penny","breed":"Mutt","age":5},
            {"id":2,"name":"Harper","breed":"Husky","age":3},
            {"id":3,"name":"Rex","breed":"Lab","age":2},
            {"id":4,"name":"Pepper","breed":"Poodle","age":7},
            {"id":5,"name":"Marley","breed":"Lab","age":9},
            {"id":6,"name":"Scout","breed":"Beagle","age":5}
        ]}),
    );
}

/// An insert whose answer carries Skerry's `txn_time` and `new_attributes` (opt-in).
fn insert(n: &TestNode, records: Value) -> Value {
    n.ok(
        json!({"operation":"insert","database":"dev","table":"dog","records":records,"write_details":true}),
    )
}

fn by_id(n: &TestNode, ids: Value) -> Value {
    n.ok(json!({"operation":"search_by_id","database":"dev","table":"dog","ids":ids,"get_attributes":["*"]}))
}

fn one(n: &TestNode, id: Value) -> Value {
    let r = by_id(n, json!([id]));
    assert_eq!(r.as_array().map(Vec::len), Some(1), "record {id}: {r}");
    r[0].clone()
}

/// Ids of an array of records, in the order returned.
fn ids_in_order(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|r| {
            r["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("no numeric id in {r}"))
        })
        .collect()
}

fn ids(v: &Value) -> Vec<i64> {
    let mut out = ids_in_order(v);
    out.sort();
    out
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn txn_time(v: &Value) -> f64 {
    v["txn_time"]
        .as_f64()
        .unwrap_or_else(|| panic!("no txn_time in {v}"))
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

#[test]
fn insert_reports_harpers_keys_and_new_attributes_and_txn_time_on_request() {
    let n = node();
    let plain = n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":9,"tail":true}]}));
    assert_eq!(
        plain,
        json!({"message":"inserted 1 of 1 records","inserted_hashes":[9],"skipped_hashes":[]})
    );
    let r = insert(
        &n,
        json!([{"id":1,"name":"Penny","breed":"Mutt","age":5},{"id":2,"name":"Harper","breed":"Husky","age":3}]),
    );
    assert_eq!(
        keys(&r),
        set(&[
            "message",
            "new_attributes",
            "txn_time",
            "inserted_hashes",
            "skipped_hashes"
        ]),
        "{r}"
    );
    assert_eq!(r["message"], "inserted 2 of 2 records");
    assert_eq!(r["inserted_hashes"], json!([1, 2]));
    assert_eq!(r["skipped_hashes"], json!([]));
    assert_eq!(
        strings(&r["new_attributes"]),
        set(&["name", "breed", "age"]),
        "{r}"
    );
    txn_time(&r);
    // Known attributes are not new again; a new one is.
    let r = insert(&n, json!([{"id":3,"name":"Rex","color":"black"}]));
    assert_eq!(r["new_attributes"], json!(["color"]), "{r}");
}

#[test]
fn insert_of_existing_key_is_skipped_not_overwritten() {
    let n = node();
    insert(&n, json!([{"id":1,"name":"Penny"}]));
    let before = one(&n, json!(1));
    let r = insert(&n, json!([{"id":1,"name":"Dup"}]));
    assert_eq!(r["message"], "inserted 0 of 1 records", "{r}");
    assert_eq!(r["inserted_hashes"], json!([]));
    assert_eq!(r["skipped_hashes"], json!([1]));
    assert_eq!(
        one(&n, json!(1)),
        before,
        "the skipped insert changed the record"
    );
}

#[test]
fn duplicate_keys_within_one_insert_keep_the_first_and_skip_the_rest() {
    let n = node();
    let r = insert(
        &n,
        json!([{"id":7,"name":"first"},{"id":7,"name":"second"},{"id":8,"name":"other"}]),
    );
    assert_eq!(r["message"], "inserted 2 of 3 records", "{r}");
    assert_eq!(r["inserted_hashes"], json!([7, 8]));
    assert_eq!(r["skipped_hashes"], json!([7]));
    assert_eq!(one(&n, json!(7))["name"], "first");
}

#[test]
fn insert_without_primary_key_generates_uuid_keys_reported_in_inserted_hashes() {
    let n = node();
    let r = insert(&n, json!([{"name":"Auto"},{"id":null,"name":"NullId"}]));
    assert_eq!(r["message"], "inserted 2 of 2 records", "{r}");
    let hashes = r["inserted_hashes"].as_array().unwrap().clone();
    assert_eq!(hashes.len(), 2, "{r}");
    for (h, name) in hashes.iter().zip(["Auto", "NullId"]) {
        let s = h
            .as_str()
            .unwrap_or_else(|| panic!("generated key is not a string: {r}"));
        assert!(is_uuid(s), "not a UUID: {s}");
        let rec = one(&n, h.clone());
        assert_eq!(rec["id"], *h);
        assert_eq!(rec["name"], name);
    }
    assert_ne!(hashes[0], hashes[1]);
    let r = n
        .ok(json!({"operation":"upsert","database":"dev","table":"dog","records":[{"name":"Up"}]}));
    let h = &r["upserted_hashes"][0];
    assert!(h.as_str().is_some_and(is_uuid), "{r}");
    assert_eq!(one(&n, h.clone())["name"], "Up");
}

#[test]
fn timestamps_follow_the_transaction_created_is_kept_and_updated_increases() {
    let n = node();
    let r = insert(
        &n,
        json!([{"id":1,"name":"Penny","__createdtime__":1,"__updatedtime__":2},{"id":2}]),
    );
    let t0 = txn_time(&r);
    let rec = one(&n, json!(1));
    assert_eq!(
        rec["__createdtime__"].as_f64(),
        Some(t0),
        "user-supplied time kept: {rec}"
    );
    assert_eq!(rec["__updatedtime__"].as_f64(), Some(t0), "{rec}");
    // One request, one transaction time for all its records.
    assert_eq!(one(&n, json!(2))["__createdtime__"].as_f64(), Some(t0));

    let u = n.ok(
        json!({"operation":"update","database":"dev","table":"dog","records":[{"id":1,"age":6}],"write_details":true}),
    );
    let t1 = txn_time(&u);
    assert!(t1 > t0, "{t1} <= {t0}");
    let rec = one(&n, json!(1));
    assert_eq!(
        rec["__createdtime__"].as_f64(),
        Some(t0),
        "update changed __createdtime__: {rec}"
    );
    assert_eq!(rec["__updatedtime__"].as_f64(), Some(t1), "{rec}");
    assert_eq!(
        rec["name"], "Penny",
        "update lost an unspecified field: {rec}"
    );
    assert_eq!(rec["age"], 6);

    let up = n.ok(json!({"operation":"upsert","database":"dev","table":"dog","records":[{"id":1,"age":7},{"id":3,"name":"Rex"}],"write_details":true}));
    let t2 = txn_time(&up);
    assert!(t2 > t1);
    let rec = one(&n, json!(1));
    assert_eq!(
        rec["__createdtime__"].as_f64(),
        Some(t0),
        "upsert changed __createdtime__: {rec}"
    );
    assert_eq!(rec["__updatedtime__"].as_f64(), Some(t2));
    assert_eq!(
        rec["name"], "Penny",
        "upsert lost an unspecified field: {rec}"
    );
    let new = one(&n, json!(3));
    assert_eq!(new["__createdtime__"].as_f64(), Some(t2), "{new}");
    assert_eq!(new["__updatedtime__"].as_f64(), Some(t2), "{new}");
}

/// One request, one transaction, one time: Harper's txn times are unique and increasing, so
/// `__updatedtime__` orders writes. Concurrent requests (group-committed together) and
/// back-to-back requests within one millisecond must still get distinct, increasing times.
#[test]
fn txn_times_are_unique_per_request_and_increase() {
    let n = node();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let addr = n.addr();
            std::thread::spawn(move || {
                let mut times = Vec::new();
                for k in 0..40 {
                    let body = json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":t * 1000 + k}],"write_details":true});
                    let (s, r) = post_json(&addr, Some(&basic(USER, PASS)), body);
                    assert_eq!(s, 200, "{r}");
                    times.push(r["txn_time"].as_f64().unwrap());
                }
                times
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        let times = t.join().unwrap();
        for w in times.windows(2) {
            assert!(
                w[1] > w[0],
                "one client's later request got txn_time {} after {}",
                w[1],
                w[0]
            );
        }
        all.extend(times);
    }
    let distinct: BTreeSet<u64> = all.iter().map(|t| t.to_bits()).collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "{} of {} requests share a txn_time with another request",
        all.len() - distinct.len(),
        all.len()
    );
}

#[test]
fn update_answers_harpers_shape_and_skips_missing_keys() {
    let n = node();
    insert(&n, json!([{"id":1,"name":"Penny","age":5}]));
    let r = n.ok(json!({"operation":"update","database":"dev","table":"dog","records":[{"id":1,"age":6},{"id":99,"age":1}]}));
    assert_eq!(
        keys(&r),
        set(&["message", "update_hashes", "skipped_hashes"]),
        "{r}"
    );
    assert_eq!(r["message"], "updated 1 of 2 records");
    assert_eq!(r["update_hashes"], json!([1]));
    assert_eq!(r["skipped_hashes"], json!([99]));
    assert_eq!(
        by_id(&n, json!([99])),
        json!([]),
        "update created a missing record"
    );
    let (s, b) =
        n.op(json!({"operation":"update","database":"dev","table":"dog","records":[{"age":4}]}));
    assert_eq!(
        (s, b),
        (
            400,
            json!({"error":"a valid hash attribute must be provided with update record, check log for more info"})
        )
    );
    assert_eq!(one(&n, json!(1))["age"], 6);
}

#[test]
fn upsert_creates_or_merges_and_reports_no_skipped_hashes() {
    let n = node();
    insert(&n, json!([{"id":2,"name":"Harper","age":3}]));
    let r = n.ok(json!({"operation":"upsert","database":"dev","table":"dog","records":[{"id":2,"age":4},{"id":3,"name":"Rex","breed":"Lab","age":2}]}));
    assert_eq!(keys(&r), set(&["message", "upserted_hashes"]), "{r}");
    assert_eq!(r["message"], "upserted 2 of 2 records");
    assert_eq!(r["upserted_hashes"], json!([2, 3]));
    let two = one(&n, json!(2));
    assert_eq!(
        (two["name"].clone(), two["age"].clone()),
        (json!("Harper"), json!(4)),
        "{two}"
    );
    assert_eq!(one(&n, json!(3))["breed"], "Lab");
}

#[test]
fn delete_answers_harpers_messages_and_the_record_is_gone_everywhere() {
    let n = node();
    dogs(&n);
    let strip = |v: Value| {
        assert!(v.get("txn_time").is_none(), "{v}");
        v
    };
    let r = n.ok(json!({"operation":"delete","database":"dev","table":"dog","ids":[3]}));
    assert_eq!(
        strip(r),
        json!({"message":"1 of 1 record successfully deleted","deleted_hashes":[3],"skipped_hashes":[]})
    );
    let r = n.ok(json!({"operation":"delete","database":"dev","table":"dog","ids":[1,2]}));
    assert_eq!(
        strip(r),
        json!({"message":"2 of 2 records successfully deleted","deleted_hashes":[1,2],"skipped_hashes":[]})
    );
    // Harper reports a key that never existed as deleted; Skerry reports it as skipped.
    let r = n.ok(json!({"operation":"delete","database":"dev","table":"dog","ids":[404]}));
    assert_eq!(
        strip(r),
        json!({"message":"0 of 1 record successfully deleted","deleted_hashes":[],"skipped_hashes":[404]})
    );

    assert_eq!(by_id(&n, json!([1, 2, 3])), json!([]));
    let lab = n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":"breed","value":"Lab"}));
    assert_eq!(
        ids(&lab),
        [5],
        "a deleted record is still in the breed index"
    );
    let all = n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":"id","value":"*"}));
    assert_eq!(ids(&all), [4, 5, 6]);
    let cond = n.ok(json!({"operation":"search_by_conditions","database":"dev","table":"dog",
        "conditions":[{"attribute":"age","comparator":"less_than","value":6}],"sort":{"attribute":"age"}}));
    assert_eq!(ids_in_order(&cond), [6], "{cond}");
    let t = n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    assert_eq!(t["record_count"], 3);

    // A deleted key can be inserted again (it is not skipped) and gets a new creation time.
    let r = insert(&n, json!([{"id":3,"name":"Rex II"}]));
    assert_eq!(r["inserted_hashes"], json!([3]), "{r}");
    let rec = one(&n, json!(3));
    assert_eq!(rec["__createdtime__"].as_f64(), Some(txn_time(&r)));
    assert_eq!(
        rec["breed"],
        Value::Null,
        "the old record's fields came back: {rec}"
    );
}

#[test]
fn search_by_id_omits_missing_ids_and_projects_attributes() {
    let n = node();
    insert(
        &n,
        json!([{"id":1,"name":"Penny","breed":"Mutt","age":5},{"id":2,"name":"Harper","breed":"Husky","age":3},{"id":3,"name":"Auto"}]),
    );
    let r = by_id(&n, json!([2, 404, 1]));
    assert_eq!(ids_in_order(&r), [2, 1], "{r}");
    let r = n.ok(json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1],"get_attributes":["id","name"]}));
    assert_eq!(r, json!([{"id":1,"name":"Penny"}]));
    // `*` returns every attribute of the table, null where the record has none.
    let r = by_id(&n, json!([3]));
    let rec = &r[0];
    assert_eq!(
        keys(rec),
        set(&[
            "id",
            "__createdtime__",
            "__updatedtime__",
            "name",
            "breed",
            "age"
        ]),
        "{rec}"
    );
    assert_eq!(
        (rec["breed"].clone(), rec["age"].clone()),
        (Value::Null, Value::Null)
    );
    let (s, b) = n.op(json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1]}));
    assert_eq!(
        (s, b),
        (500, json!({"error":"'get_attributes' is required"}))
    );
}

#[test]
fn search_by_value_matches_exact_values_wildcards_and_numbers() {
    let n = node();
    dogs(&n);
    // (attribute, value, expected ids)
    let cases: Vec<(&str, Value, Vec<i64>)> = vec![
        ("breed", json!("Husky"), vec![2]),
        ("breed", json!("Lab"), vec![3, 5]),
        ("name", json!("P*"), vec![1, 4]),
        ("name", json!("*y"), vec![1, 5]),
        ("name", json!("*ar*"), vec![2, 5]),
        ("name", json!("*"), vec![1, 2, 3, 4, 5, 6]),
        ("age", json!(5), vec![1, 6]),
        ("age", json!(9), vec![5]),
        ("id", json!(4), vec![4]),
        ("breed", json!("lab"), vec![]),
        ("breed", json!("Nope"), vec![]),
        ("nope", json!("x"), vec![]),
    ];
    for (attribute, value, expected) in cases {
        let req = json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":attribute,"value":value,"get_attributes":["id","name"]});
        let r = n.ok(req.clone());
        assert_eq!(ids(&r), expected, "{req} -> {r}");
        for rec in r.as_array().unwrap() {
            assert_eq!(keys(rec), set(&["id", "name"]), "{req}: {rec}");
        }
    }
    // Without get_attributes: whole records.
    let r = n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":"breed","value":"Mutt"}));
    assert_eq!(r.as_array().unwrap().len(), 1);
    assert_eq!(r[0]["name"], "Penny");
    assert_eq!(r[0]["age"], 5);
    assert!(r[0]["__updatedtime__"].is_number(), "{r}");
}

/// Runs a search_by_conditions and returns the ids (sorted when `sorted`).
fn cond(n: &TestNode, extra: Value) -> Value {
    let mut req = json!({"operation":"search_by_conditions","database":"dev","table":"dog","get_attributes":["id"]});
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    n.ok(req)
}

fn leaf(attribute: &str, comparator: &str, value: Value) -> Value {
    json!({"attribute":attribute,"comparator":comparator,"value":value})
}

#[test]
fn search_by_conditions_supports_every_comparator() {
    let n = node();
    dogs(&n);
    let cases: Vec<(Value, Vec<i64>)> = vec![
        (leaf("breed", "equals", json!("Lab")), vec![3, 5]),
        (leaf("age", "equals", json!(5)), vec![1, 6]),
        (leaf("breed", "not_equal", json!("Lab")), vec![1, 2, 4, 6]),
        (leaf("name", "contains", json!("ar")), vec![2, 5]),
        (leaf("name", "starts_with", json!("P")), vec![1, 4]),
        (leaf("name", "ends_with", json!("y")), vec![1, 5]),
        (leaf("age", "greater_than", json!(5)), vec![4, 5]),
        (
            leaf("age", "greater_than_equal", json!(5)),
            vec![1, 4, 5, 6],
        ),
        (leaf("age", "less_than", json!(3)), vec![3]),
        (leaf("age", "less_than_equal", json!(3)), vec![2, 3]),
        (leaf("age", "between", json!([3, 5])), vec![1, 2, 6]),
        (leaf("name", "between", json!(["H", "P"])), vec![2, 5]),
        (leaf("nope", "equals", json!(1)), vec![]),
    ];
    for (c, expected) in cases {
        let r = cond(&n, json!({"conditions":[c.clone()]}));
        assert_eq!(ids(&r), expected, "{c} -> {r}");
    }
}

#[test]
fn search_by_conditions_combines_with_and_or_and_nested_groups() {
    let n = node();
    dogs(&n);
    let cases: Vec<(Value, Vec<i64>)> = vec![
        (
            json!({"operator":"and","conditions":[leaf("breed","equals",json!("Lab")),leaf("age","greater_than",json!(5))]}),
            vec![5],
        ),
        // `and` is the default.
        (
            json!({"conditions":[leaf("breed","equals",json!("Lab")),leaf("age","greater_than",json!(5))]}),
            vec![5],
        ),
        (
            json!({"operator":"or","conditions":[leaf("breed","equals",json!("Husky")),leaf("age","greater_than_equal",json!(9))]}),
            vec![2, 5],
        ),
        (
            json!({"operator":"or","conditions":[
                leaf("name","starts_with",json!("P")),
                {"operator":"and","conditions":[leaf("breed","equals",json!("Lab")),leaf("age","less_than",json!(5))]}
            ]}),
            vec![1, 3, 4],
        ),
        (
            json!({"operator":"and","conditions":[
                leaf("age","greater_than_equal",json!(3)),
                {"operator":"or","conditions":[leaf("breed","equals",json!("Lab")),leaf("breed","equals",json!("Mutt"))]}
            ]}),
            vec![1, 5],
        ),
        // Harper's captured request: legacy field names.
        (
            json!({"operator":"and","conditions":[
                {"search_attribute":"age","search_type":"greater_than_equal","search_value":3},
                {"search_attribute":"breed","search_type":"not_equal","search_value":"Lab"}
            ]}),
            vec![1, 2, 4, 6],
        ),
    ];
    for (extra, expected) in cases {
        let r = cond(&n, extra.clone());
        assert_eq!(ids(&r), expected, "{extra} -> {r}");
    }
}

#[test]
fn search_by_conditions_sorts_pages_and_breaks_ties_with_next() {
    let n = node();
    dogs(&n);
    let all = json!([leaf("age", "greater_than", json!(0))]);
    let cases: Vec<(Value, Vec<i64>)> = vec![
        (
            json!({"conditions":all,"sort":{"attribute":"age","next":{"attribute":"name"}}}),
            vec![3, 2, 1, 6, 4, 5],
        ),
        (
            json!({"conditions":all,"sort":{"attribute":"age","descending":true,"next":{"attribute":"name","descending":true}}}),
            vec![5, 4, 6, 1, 2, 3],
        ),
        (
            json!({"conditions":all,"sort":{"attribute":"name"}}),
            vec![2, 5, 1, 4, 3, 6],
        ),
        (
            json!({"conditions":all,"sort":{"attribute":"age","descending":true},"limit":2}),
            vec![5, 4],
        ),
        (
            json!({"conditions":all,"sort":{"attribute":"age","descending":true,"next":{"attribute":"name"}},"offset":2,"limit":2}),
            vec![1, 6],
        ),
        (
            json!({"conditions":all,"sort":{"attribute":"name"},"offset":5}),
            vec![6],
        ),
        (
            json!({"conditions":all,"sort":{"attribute":"name"},"offset":6}),
            vec![],
        ),
    ];
    for (extra, expected) in cases {
        let r = cond(&n, extra.clone());
        assert_eq!(ids_in_order(&r), expected, "{extra} -> {r}");
    }
    // limit and offset without sort still page through distinct records.
    let a = cond(&n, json!({"conditions":all,"limit":3}));
    let b = cond(&n, json!({"conditions":all,"limit":3,"offset":3}));
    assert_eq!(a.as_array().unwrap().len(), 3, "{a}");
    assert_eq!(b.as_array().unwrap().len(), 3, "{b}");
    let mut both = ids(&a);
    both.extend(ids(&b));
    both.sort();
    assert_eq!(both, [1, 2, 3, 4, 5, 6], "pages overlap: {a} {b}");
}

#[test]
fn secondary_indexes_never_return_stale_values_after_update_upsert_and_delete() {
    let n = node();
    insert(
        &n,
        json!([{"id":1,"name":"Penny","breed":"Mutt","age":5,"tags":["a","b"]},{"id":2,"name":"Harper","breed":"Husky","age":3}]),
    );
    let value = |attribute: &str, v: Value| {
        ids(&n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":attribute,"value":v,"get_attributes":["id"]})))
    };
    let c = |c: Value| ids(&cond(&n, json!({"conditions":[c]})));
    assert_eq!(value("tags", json!("a")), [1], "array elements are indexed");

    n.ok(json!({"operation":"update","database":"dev","table":"dog","records":[{"id":1,"breed":"Husky","age":10,"tags":["b","c"]}]}));
    assert_eq!(
        value("breed", json!("Mutt")),
        Vec::<i64>::new(),
        "stale breed after update"
    );
    assert_eq!(
        c(leaf("breed", "starts_with", json!("Mu"))),
        Vec::<i64>::new()
    );
    assert_eq!(value("breed", json!("Husky")), [1, 2]);
    assert_eq!(
        c(leaf("age", "less_than", json!(6))),
        [2],
        "stale age after update"
    );
    assert_eq!(c(leaf("age", "greater_than", json!(8))), [1]);
    assert_eq!(
        value("tags", json!("a")),
        Vec::<i64>::new(),
        "stale array element after update"
    );
    assert_eq!(value("tags", json!("c")), [1]);
    assert_eq!(
        value("name", json!("Penny")),
        [1],
        "an unchanged attribute lost its entry"
    );

    n.ok(json!({"operation":"upsert","database":"dev","table":"dog","records":[{"id":2,"breed":"Lab","age":null}]}));
    assert_eq!(
        value("breed", json!("Husky")),
        [1],
        "stale breed after upsert"
    );
    assert_eq!(value("breed", json!("Lab")), [2]);
    assert_eq!(
        c(leaf("age", "equals", json!(3))),
        Vec::<i64>::new(),
        "stale age after upsert to null"
    );

    n.ok(json!({"operation":"delete","database":"dev","table":"dog","ids":[1]}));
    for (attr, v) in [
        ("breed", json!("Husky")),
        ("age", json!(10)),
        ("tags", json!("b")),
        ("name", json!("Penny")),
    ] {
        assert_eq!(
            value(attr, v.clone()),
            Vec::<i64>::new(),
            "{attr}={v} still found after delete"
        );
    }
    assert_eq!(c(leaf("name", "contains", json!("enn"))), Vec::<i64>::new());

    insert(&n, json!([{"id":1,"name":"Rex","breed":"Lab"}]));
    assert_eq!(value("breed", json!("Lab")), [1, 2]);
    assert_eq!(
        value("name", json!("Penny")),
        Vec::<i64>::new(),
        "the old record's name came back"
    );
    assert_eq!(
        value("tags", json!("c")),
        Vec::<i64>::new(),
        "the old record's tags came back"
    );
}

#[test]
fn thousand_records_in_one_insert_are_one_transaction() {
    let n = node();
    let records: Vec<Value> = (0..1000)
        .map(|i| json!({"id":i,"n":i % 10,"name":format!("dog{i}")}))
        .collect();
    let r = insert(&n, Value::Array(records));
    assert_eq!(r["message"], "inserted 1000 of 1000 records");
    let expected: Vec<Value> = (0..1000).map(|i| json!(i)).collect();
    assert_eq!(r["inserted_hashes"], Value::Array(expected));
    assert_eq!(r["skipped_hashes"], json!([]));
    let t = txn_time(&r);

    let d = n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    assert_eq!(d["record_count"], 1000);
    let all = n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":"id","value":"*","get_attributes":["id"]}));
    assert_eq!(ids(&all), (0..1000).collect::<Vec<i64>>());
    let same_txn = n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":"__createdtime__","value":t,"get_attributes":["id"]}));
    assert_eq!(
        same_txn.as_array().unwrap().len(),
        1000,
        "all records carry the request's txn_time"
    );
    let threes = cond(&n, json!({"conditions":[leaf("n","equals",json!(3))]}));
    assert_eq!(threes.as_array().unwrap().len(), 100);
    let dog99 = n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":"name","value":"dog99*","get_attributes":["id"]}));
    assert_eq!(
        ids(&dog99),
        [99, 990, 991, 992, 993, 994, 995, 996, 997, 998, 999]
    );
    let page = cond(
        &n,
        json!({"conditions":[leaf("id","between",json!([100,899]))],"sort":{"attribute":"id","descending":true},"offset":10,"limit":5}),
    );
    assert_eq!(ids_in_order(&page), [889, 888, 887, 886, 885]);
}

/// Index keys of numbers must sort numerically across signs, fractions and magnitudes.
#[test]
fn numeric_ranges_and_sorting_order_negative_fractional_and_large_numbers() {
    let n = node();
    let values = [
        (1, -5.0),
        (2, -1.0),
        (3, 0.0),
        (4, 1.5),
        (5, 2.0),
        (6, 100.0),
        (7, 1e10),
        (8, -0.5),
        (9, -1e10),
    ];
    insert(
        &n,
        Value::Array(
            values
                .iter()
                .map(|(id, v)| json!({"id":id,"v":v}))
                .collect(),
        ),
    );
    let cases: Vec<(Value, Vec<i64>)> = vec![
        (
            json!({"conditions":[leaf("v","less_than",json!(0))],"sort":{"attribute":"v"}}),
            vec![9, 1, 2, 8],
        ),
        (
            json!({"conditions":[leaf("v","between",json!([-2, 1.5]))],"sort":{"attribute":"v"}}),
            vec![2, 8, 3, 4],
        ),
        (
            json!({"conditions":[leaf("v","greater_than",json!(-1))],"sort":{"attribute":"v","descending":true}}),
            vec![7, 6, 5, 4, 3, 8],
        ),
        (
            json!({"conditions":[leaf("v","greater_than_equal",json!(2))],"sort":{"attribute":"v"}}),
            vec![5, 6, 7],
        ),
    ];
    for (extra, expected) in cases {
        let r = cond(&n, extra.clone());
        assert_eq!(ids_in_order(&r), expected, "{extra} -> {r}");
    }
    // 1.0 and 1 are the same key, "1" is another one.
    let r = insert(&n, json!([{"id":1.0},{"id":"1"}]));
    assert_eq!(r["inserted_hashes"], json!(["1"]), "{r}");
    assert_eq!(r["skipped_hashes"].as_array().map(Vec::len), Some(1), "{r}");
}

/// Many clients inserting the same key at once: exactly one wins, the rest are skipped.
#[test]
fn concurrent_inserts_of_one_key_insert_it_exactly_once() {
    let n = node();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let addr = n.addr();
            std::thread::spawn(move || {
                (0..20)
                    .filter(|k| {
                        let body = json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":k,"name":format!("t{t}")}]});
                        let (s, r) = post_json(&addr, Some(&basic(USER, PASS)), body);
                        assert_eq!(s, 200, "{r}");
                        r["inserted_hashes"] == json!([k])
                    })
                    .map(|k| (k, format!("t{t}")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut wins: Vec<(i32, String)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    wins.sort();
    assert_eq!(
        wins.iter().map(|w| w.0).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>(),
        "{wins:?}"
    );
    for (k, name) in wins {
        assert_eq!(
            one(&n, json!(k))["name"],
            name.as_str(),
            "the stored record is not the winner's"
        );
    }
}

/// update and upsert merge with the stored record; concurrent updates of different fields of
/// one record must not undo each other (the merge happens against the latest version).
#[test]
fn concurrent_updates_of_different_fields_lose_nothing() {
    let n = node();
    insert(&n, json!([{"id":1,"name":"Penny"}]));
    let threads: Vec<_> = ["a", "b", "c", "d"]
        .into_iter()
        .enumerate()
        .map(|(i, field)| {
            let addr = n.addr();
            std::thread::spawn(move || {
                let op = if i % 2 == 0 { "update" } else { "upsert" };
                for k in 1..=40 {
                    let mut rec = json!({"id":1});
                    rec[field] = json!(k);
                    let body =
                        json!({"operation":op,"database":"dev","table":"dog","records":[rec]});
                    let (s, r) = post_json(&addr, Some(&basic(USER, PASS)), body);
                    assert_eq!(s, 200, "{r}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let rec = one(&n, json!(1));
    for f in ["a", "b", "c", "d"] {
        assert_eq!(rec[f], 40, "field {f} lost an acknowledged update: {rec}");
    }
    assert_eq!(rec["name"], "Penny");
}
