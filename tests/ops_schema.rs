//! Databases, tables and attributes over the operations API, against the real binary: Harper's
//! messages and status codes (spec §5.2, captures in shared/spec/harper-live), the shape of
//! describe_* and the legacy aliases (`schema`, `hash_attribute`, `*_schema`, `search_by_hash`).

mod common;
use common::*;
use serde_json::{json, Value};

const SUITE: u8 = 12;

fn node() -> TestNode {
    TestNode::start(&ips(SUITE, 1)[0], "")
}

/// Sends `req` and asserts the exact status and body.
fn expect(n: &TestNode, req: Value, status: u16, body: Value) {
    let (s, b) = n.op(req.clone());
    assert_eq!((s, &b), (status, &body), "request {req}");
}

fn keys_of(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

fn attribute_names(table: &Value) -> Vec<String> {
    table["attributes"]
        .as_array()
        .unwrap_or_else(|| panic!("no attributes: {table}"))
        .iter()
        .map(|a| a["attribute"].as_str().unwrap().to_string())
        .collect()
}

fn ids(v: &Value) -> Vec<i64> {
    let mut out: Vec<i64> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|r| {
            r["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("no numeric id in {r}"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn fresh_node_describe_all_is_an_empty_object_without_system() {
    let n = node();
    expect(&n, json!({"operation":"describe_all"}), 200, json!({}));
}

#[test]
fn create_database_answers_harpers_message_and_a_duplicate_is_400() {
    let n = node();
    expect(
        &n,
        json!({"operation":"create_database","database":"dev"}),
        200,
        json!({"message":"database 'dev' successfully created"}),
    );
    expect(
        &n,
        json!({"operation":"create_database","database":"dev"}),
        400,
        json!({"error":"database 'dev' already exists"}),
    );
    // A database without tables is listed as an empty object.
    expect(
        &n,
        json!({"operation":"describe_all"}),
        200,
        json!({"dev":{}}),
    );
    expect(
        &n,
        json!({"operation":"describe_database","database":"dev"}),
        200,
        json!({}),
    );
}

#[test]
fn create_table_messages_and_errors_match_harper() {
    let n = node();
    // (request, status, body), run in order: state carries over.
    let cases = [
        (
            json!({"operation":"create_table","database":"dev","table":"dog","primary_key":"id"}),
            200,
            json!({"message":"table 'dev.dog' successfully created."}),
        ),
        (
            json!({"operation":"create_table","database":"dev","table":"dog","primary_key":"id"}),
            400,
            json!({"error":"Table 'dog' already exists in 'dev'"}),
        ),
        (
            json!({"operation":"create_table","database":"dev","table":"cat"}),
            400,
            json!({"error":"'primary_key' is required"}),
        ),
        // The database is created on the fly.
        (
            json!({"operation":"create_table","database":"auto","table":"t","primary_key":"k"}),
            200,
            json!({"message":"table 'auto.t' successfully created."}),
        ),
        // No database: Harper's default `data`.
        (
            json!({"operation":"create_table","table":"t","primary_key":"id"}),
            200,
            json!({"message":"table 'data.t' successfully created."}),
        ),
    ];
    for (req, status, body) in cases {
        expect(&n, req, status, body);
    }
    let all = n.ok(json!({"operation":"describe_all"}));
    assert_eq!(keys_of(&all), ["auto", "data", "dev"], "{all}");
    assert_eq!(
        keys_of(&all["dev"]),
        ["dog"],
        "the refused 'cat' must not exist: {all}"
    );
    assert_eq!(all["auto"]["t"]["hash_attribute"], "k");
    assert_eq!(all["data"]["t"]["schema"], "data");
}

#[test]
fn describe_table_lists_attributes_in_harper_order_and_counts_only_live_records() {
    let n = node();
    create_dog_table(&n);
    n.ok(
        json!({"operation":"insert","database":"dev","table":"dog","records":[
            {"id":1,"name":"Penny","breed":"Mutt","age":5},
            {"id":2,"name":"Harper","breed":"Husky","age":3},
            {"id":3,"name":"Rex"},
            {"id":4,"name":"Pepper"}
        ]}),
    );
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":5,"color":"brown"}]}));
    n.ok(json!({"operation":"delete","database":"dev","table":"dog","ids":[3]}));
    // Deleting the same id again, and an id that never existed, must not lower the count.
    n.ok(json!({"operation":"delete","database":"dev","table":"dog","ids":[3]}));
    n.ok(json!({"operation":"delete","database":"dev","table":"dog","ids":[999]}));

    let t = n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    assert_eq!(t["schema"], "dev", "{t}");
    assert_eq!(t["name"], "dog");
    assert_eq!(t["hash_attribute"], "id");
    assert_eq!(t["audit"], true);
    assert_eq!(t["schema_defined"], false);
    assert_eq!(
        t["attributes"],
        json!([
            {"attribute":"id","is_primary_key":true},
            {"attribute":"__createdtime__","indexed":true},
            {"attribute":"__updatedtime__","indexed":true},
            {"attribute":"name","indexed":true},
            {"attribute":"breed","indexed":true},
            {"attribute":"age","indexed":true},
            {"attribute":"color","indexed":true}
        ]),
        "{t}"
    );
    assert_eq!(
        t["record_count"], 4,
        "5 inserted, 1 deleted (tombstones do not count): {t}"
    );
    for k in ["db_size", "table_size", "db_audit_size"] {
        assert!(t[k].is_number(), "{k} missing: {t}");
    }
    let recs = n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":"id","value":"*","get_attributes":["*"]}));
    let newest = recs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["__updatedtime__"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let last = t["last_updated_record"]
        .as_f64()
        .unwrap_or_else(|| panic!("{t}"));
    assert!(
        last >= newest,
        "last_updated_record {last} < newest record {newest}"
    );
}

#[test]
fn describe_database_and_describe_all_show_every_table_with_its_count() {
    let n = node();
    create_dog_table(&n);
    n.ok(json!({"operation":"create_table","database":"dev","table":"cat","primary_key":"id"}));
    n.ok(json!({"operation":"create_table","database":"prod","table":"x","primary_key":"id"}));
    n.ok(
        json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1},{"id":2}]}),
    );
    n.ok(json!({"operation":"insert","database":"dev","table":"cat","records":[{"id":1}]}));

    let dev = n.ok(json!({"operation":"describe_database","database":"dev"}));
    assert_eq!(keys_of(&dev), ["cat", "dog"], "{dev}");
    assert_eq!(dev["dog"]["record_count"], 2);
    assert_eq!(dev["cat"]["record_count"], 1);
    assert_eq!(dev["cat"]["name"], "cat");
    assert_eq!(dev["cat"]["schema"], "dev");

    let all = n.ok(json!({"operation":"describe_all"}));
    assert_eq!(
        keys_of(&all),
        ["dev", "prod"],
        "system must not be listed: {all}"
    );
    assert_eq!(keys_of(&all["prod"]), ["x"]);
    assert_eq!(all["prod"]["x"]["record_count"], 0);
    assert_eq!(all["dev"]["dog"]["record_count"], 2);
    assert_eq!(all["dev"]["dog"]["attributes"], dev["dog"]["attributes"]);
}

#[test]
fn unknown_database_or_table_answers_404_with_harpers_text() {
    let n = node();
    create_dog_table(&n);
    let no_table = json!({"error":"Table 'dev.nope' does not exist"});
    let no_db = json!({"error":"database 'nope' does not exist"});
    let cases = [
        (
            json!({"operation":"describe_database","database":"nope"}),
            404,
            no_db.clone(),
        ),
        (
            json!({"operation":"describe_table","database":"dev","table":"nope"}),
            404,
            no_table.clone(),
        ),
        (
            json!({"operation":"describe_table","database":"nope","table":"dog"}),
            404,
            no_db.clone(),
        ),
        (
            json!({"operation":"drop_table","database":"dev","table":"nope"}),
            404,
            no_table.clone(),
        ),
        (
            json!({"operation":"drop_database","database":"nope"}),
            404,
            no_db.clone(),
        ),
        (
            json!({"operation":"drop_database"}),
            400,
            json!({"error":"'database' is required"}),
        ),
        (
            json!({"operation":"create_attribute","database":"dev","table":"nope","attribute":"a"}),
            404,
            no_table.clone(),
        ),
        (
            json!({"operation":"drop_attribute","database":"dev","table":"nope","attribute":"a"}),
            404,
            no_table.clone(),
        ),
    ];
    for (req, status, body) in cases {
        expect(&n, req, status, body);
    }
    // Nothing was created by the refused requests.
    let all = n.ok(json!({"operation":"describe_all"}));
    assert_eq!(keys_of(&all), ["dev"], "{all}");
    assert_eq!(keys_of(&all["dev"]), ["dog"], "{all}");
}

#[test]
fn dropped_table_is_gone_and_a_recreated_table_of_that_name_starts_empty() {
    let n = node();
    create_dog_table(&n);
    n.ok(json!({"operation":"create_table","database":"dev","table":"cat","primary_key":"id"}));
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1,"name":"Penny"},{"id":2,"name":"Harper"}]}));
    n.ok(json!({"operation":"insert","database":"dev","table":"cat","records":[{"id":1,"name":"Tom"}]}));

    expect(
        &n,
        json!({"operation":"drop_table","database":"dev","table":"dog"}),
        200,
        json!({"message":"successfully deleted table 'dev.dog'"}),
    );
    let dev = n.ok(json!({"operation":"describe_database","database":"dev"}));
    assert_eq!(keys_of(&dev), ["cat"], "{dev}");
    expect(
        &n,
        json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1],"get_attributes":["*"]}),
        404,
        json!({"error":"Table 'dev.dog' does not exist"}),
    );

    create_dog_table(&n);
    let t = n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    assert_eq!(t["record_count"], 0, "{t}");
    assert_eq!(
        attribute_names(&t),
        ["id", "__createdtime__", "__updatedtime__"],
        "attributes of the dropped table came back: {t}"
    );
    let old = n.ok(json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1,2],"get_attributes":["*"]}));
    assert_eq!(old, json!([]), "records of the dropped table came back");
    let by_name = n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":"name","value":"*"}));
    assert_eq!(
        by_name,
        json!([]),
        "index entries of the dropped table came back"
    );
    // The other table is untouched.
    let cat = n.ok(json!({"operation":"search_by_id","database":"dev","table":"cat","ids":[1],"get_attributes":["name"]}));
    assert_eq!(cat, json!([{"name":"Tom"}]));
}

#[test]
fn dropped_database_takes_its_tables_and_records_with_it() {
    let n = node();
    create_dog_table(&n);
    n.ok(json!({"operation":"create_table","database":"keep","table":"k","primary_key":"id"}));
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1,"name":"Penny"}]}));
    n.ok(json!({"operation":"insert","database":"keep","table":"k","records":[{"id":7}]}));

    expect(
        &n,
        json!({"operation":"drop_database","database":"dev"}),
        200,
        json!({"message":"successfully deleted 'dev'"}),
    );
    let all = n.ok(json!({"operation":"describe_all"}));
    assert_eq!(keys_of(&all), ["keep"], "{all}");
    expect(
        &n,
        json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1],"get_attributes":["*"]}),
        404,
        json!({"error":"database 'dev' does not exist"}),
    );

    create_dog_table(&n);
    let t = n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    assert_eq!(t["record_count"], 0, "{t}");
    let old = n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":"name","value":"Penny"}));
    assert_eq!(old, json!([]), "a record of the dropped database came back");
    let k = n.ok(json!({"operation":"search_by_id","database":"keep","table":"k","ids":[7],"get_attributes":["id"]}));
    assert_eq!(k, json!([{"id":7}]));
}

#[test]
fn create_and_drop_attribute_change_describe_table_but_key_and_timestamps_cannot_be_dropped() {
    let n = node();
    create_dog_table(&n);
    expect(
        &n,
        json!({"operation":"create_attribute","database":"dev","table":"dog","attribute":"is_adorable"}),
        200,
        json!({"message":"attribute 'dev.dog.is_adorable' successfully created."}),
    );
    let t = n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    assert_eq!(
        attribute_names(&t),
        ["id", "__createdtime__", "__updatedtime__", "is_adorable"],
        "{t}"
    );
    expect(
        &n,
        json!({"operation":"create_attribute","database":"dev","table":"dog","attribute":"is_adorable"}),
        400,
        json!({"error":"attribute 'is_adorable' already exists in dev.dog"}),
    );
    // The attribute is indexed and searchable.
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1,"is_adorable":true},{"id":2,"is_adorable":false}]}));
    let r = n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":"is_adorable","value":true,"get_attributes":["id"]}));
    assert_eq!(ids(&r), [1]);

    expect(
        &n,
        json!({"operation":"drop_attribute","database":"dev","table":"dog","attribute":"is_adorable"}),
        200,
        json!({"message":"successfully deleted attribute 'is_adorable'"}),
    );
    let t = n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    assert_eq!(
        attribute_names(&t),
        ["id", "__createdtime__", "__updatedtime__"],
        "{t}"
    );

    // Harper (dataLayer/schema.js dropAttribute) refuses the primary key and the timestamps.
    let cases = [
        ("id", "You cannot drop a hash attribute"),
        (
            "__createdtime__",
            "cannot drop internal timestamp attribute: __createdtime__",
        ),
        (
            "__updatedtime__",
            "cannot drop internal timestamp attribute: __updatedtime__",
        ),
    ];
    let mut failures = Vec::new();
    for (attribute, msg) in cases {
        let (s, b) = n.op(json!({"operation":"drop_attribute","database":"dev","table":"dog","attribute":attribute}));
        if (s, &b) != (400, &json!({ "error": msg })) {
            failures.push(format!(
                "drop_attribute {attribute}: expected 400 {msg:?}, got {s} {b}"
            ));
        }
    }
    let t = n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    if attribute_names(&t) != ["id", "__createdtime__", "__updatedtime__"] {
        failures.push(format!(
            "attributes after the refused drops: {:?}",
            attribute_names(&t)
        ));
    }
    assert_eq!(t["record_count"], 2);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn legacy_aliases_behave_like_the_current_names() {
    let n = node();
    expect(
        &n,
        json!({"operation":"create_schema","schema":"legacy"}),
        200,
        json!({"message":"database 'legacy' successfully created"}),
    );
    expect(
        &n,
        json!({"operation":"create_table","schema":"legacy","table":"dog","hash_attribute":"id"}),
        200,
        json!({"message":"table 'legacy.dog' successfully created."}),
    );
    let r = n.ok(json!({"operation":"insert","schema":"legacy","table":"dog","records":[
        {"id":1,"name":"Penny","age":5},{"id":2,"name":"Harper","age":3},{"id":3,"name":"Rex","age":2}
    ]}));
    assert_eq!(r["inserted_hashes"], json!([1, 2, 3]));

    // (legacy request, current request): both must give the same 200 answer.
    let pairs = [
        (
            json!({"operation":"describe_schema","schema":"legacy"}),
            json!({"operation":"describe_database","database":"legacy"}),
        ),
        (
            json!({"operation":"describe_table","schema":"legacy","table":"dog"}),
            json!({"operation":"describe_table","database":"legacy","table":"dog"}),
        ),
        (
            json!({"operation":"search_by_hash","schema":"legacy","table":"dog","hash_values":[1,2],"get_attributes":["*"]}),
            json!({"operation":"search_by_id","database":"legacy","table":"dog","ids":[1,2],"get_attributes":["*"]}),
        ),
        (
            json!({"operation":"search_by_value","schema":"legacy","table":"dog","search_attribute":"name","search_value":"Penny","get_attributes":["*"]}),
            json!({"operation":"search_by_value","database":"legacy","table":"dog","attribute":"name","value":"Penny","get_attributes":["*"]}),
        ),
        (
            json!({"operation":"search_by_conditions","schema":"legacy","table":"dog","get_attributes":["id"],
                   "conditions":[{"search_attribute":"age","search_type":"greater_than_equal","search_value":3}]}),
            json!({"operation":"search_by_conditions","database":"legacy","table":"dog","get_attributes":["id"],
                   "conditions":[{"attribute":"age","comparator":"greater_than_equal","value":3}]}),
        ),
    ];
    for (legacy, current) in pairs {
        let a = n.ok(legacy.clone());
        let b = n.ok(current.clone());
        assert_eq!(a, b, "{legacy} differs from {current}");
        assert_ne!(a, json!([]), "{legacy} found nothing");
        assert_ne!(a, json!({}), "{legacy} found nothing");
    }
    let t = n.ok(json!({"operation":"describe_table","schema":"legacy","table":"dog"}));
    assert_eq!(t["hash_attribute"], "id");
    assert_eq!(t["record_count"], 3);

    let del = n.ok(json!({"operation":"delete","schema":"legacy","table":"dog","hash_values":[2]}));
    assert_eq!(
        del,
        json!({"message":"1 of 1 record successfully deleted","deleted_hashes":[2],"skipped_hashes":[]})
    );
    let left = n.ok(json!({"operation":"search_by_hash","schema":"legacy","table":"dog","hash_values":[1,2,3],"get_attributes":["id"]}));
    assert_eq!(ids(&left), [1, 3]);
    expect(
        &n,
        json!({"operation":"drop_schema","schema":"legacy"}),
        200,
        json!({"message":"successfully deleted 'legacy'"}),
    );
    expect(&n, json!({"operation":"describe_all"}), 200, json!({}));
}

#[test]
fn schema_defined_table_gets_no_timestamp_attributes_unless_declared() {
    let n = node();
    n.ok(
        json!({"operation":"create_table","database":"dev","table":"typed","primary_key":"id",
        "attributes":[{"name":"id","type":"Int"},{"name":"name","type":"String"}]}),
    );
    let t = n.ok(json!({"operation":"describe_table","database":"dev","table":"typed"}));
    assert_eq!(t["schema_defined"], true, "{t}");
    assert_eq!(attribute_names(&t), ["id", "name"], "{t}");
    n.ok(json!({"operation":"insert","database":"dev","table":"typed","records":[{"id":1,"name":"x"}]}));
    let r = n.ok(json!({"operation":"search_by_id","database":"dev","table":"typed","ids":[1],"get_attributes":["*"]}));
    assert_eq!(r, json!([{"id":1,"name":"x"}]));
}

/// Whatever drop_attribute does to stored values (Harper removes them), the secondary index of a
/// re-created attribute must agree with the records: a search may not miss a record that
/// search_by_id shows with the searched value.
#[test]
fn recreated_attribute_index_agrees_with_stored_records() {
    let n = node();
    create_dog_table(&n);
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1,"color":"red"},{"id":2,"color":"blue"}]}));
    n.ok(json!({"operation":"drop_attribute","database":"dev","table":"dog","attribute":"color"}));
    n.ok(
        json!({"operation":"create_attribute","database":"dev","table":"dog","attribute":"color"}),
    );
    // A new record re-uses the attribute after its re-creation.
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":3,"color":"red"}]}));

    let all = n.ok(json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1,2,3],"get_attributes":["*"]}));
    let stored_red: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["color"] == "red")
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert!(stored_red.contains(&3), "{all}");
    let by_value = n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":"color","value":"red","get_attributes":["id"]}));
    assert_eq!(
        ids(&by_value),
        stored_red,
        "search_by_value disagrees with the stored records {all}"
    );
    let by_cond = n.ok(json!({"operation":"search_by_conditions","database":"dev","table":"dog","get_attributes":["id"],
        "conditions":[{"attribute":"color","comparator":"starts_with","value":"r"}]}));
    assert_eq!(
        ids(&by_cond),
        stored_red,
        "search_by_conditions disagrees with the stored records {all}"
    );
}
