//! Node administration operations against real `skerry` processes: get_configuration,
//! set_configuration, read_log (the node's own log file), system_information, restart
//! (issue 10).

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const SUITE: u8 = 25;

/// A node with a reader (non super_user) account.
fn node_with_reader(extra_yaml: &str) -> TestNode {
    let n = TestNode::start(&ips(SUITE, 1)[0], extra_yaml);
    n.ok(json!({"operation":"add_role","role":"reader","permission":{"super_user":false}}));
    n.ok(json!({"operation":"add_user","role":"reader","username":"r","password":"pw","active":true}));
    n
}

#[test]
fn admin_operations_are_refused_to_a_non_super_user_with_harpers_handler_names() {
    let n = node_with_reader("");
    for (op, handler) in [
        ("get_configuration", "getConfiguration"),
        ("set_configuration", "setConfiguration"),
        ("system_information", "systemInformation"),
        ("read_log", "readLog"),
        ("restart", "restart"),
    ] {
        let (s, b) = n.op_as(
            "r",
            "pw",
            json!({"operation": op, "logging_level": "debug"}),
        );
        assert_eq!(s, 403, "{op}: {b}");
        assert_eq!(
            b,
            json!({"error":"This operation is not authorized due to role restrictions and/or invalid database items",
                "unauthorized_access":[format!("Operation '{handler}' is restricted to 'super_user' roles")],
                "invalid_schema_items":[]}),
            "{op}"
        );
    }
    // Nothing was written.
    assert!(!std::fs::read_to_string(&n.config)
        .unwrap()
        .contains("debug"));
}

#[test]
fn get_configuration_shows_every_key_with_its_default_and_the_files_values() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "storage:\n  cacheSize: 16M\n");
    let c = n.ok(json!({"operation":"get_configuration"}));
    assert_eq!(
        c["operationsApi"]["network"]["port"],
        format!("{}:9925", n.ip)
    );
    assert_eq!(c["storage"]["cacheSize"], "16M");
    // Defaults for keys the file does not set.
    assert_eq!(c["replication"]["auditRetention"], "3d");
    assert_eq!(c["authentication"]["operationTokenTimeout"], "1d");
    assert_eq!(c["logging"]["rotation"]["maxSize"], "10M");
    assert_eq!(c["rootPath"], n.dir.join("data").display().to_string());
}

#[test]
fn set_configuration_writes_only_its_keys_validates_first_and_applies_the_log_level_live() {
    let n = TestNode::start(
        &ips(SUITE, 1)[0],
        "# operator's note\nstorage:\n  cacheSize: 16M # tuned\n",
    );
    let before = std::fs::read_to_string(&n.config).unwrap();

    // Refusals leave the file as it was.
    for (body, wanted) in [
        (
            json!({"operation":"set_configuration","logging_level":"loud"}),
            "config file validation error",
        ),
        (
            json!({"operation":"set_configuration","no_such_key":1}),
            "unknown configuration key 'no_such_key'",
        ),
        (
            json!({"operation":"set_configuration"}),
            "no configuration key given",
        ),
        (
            json!({"operation":"set_configuration","operationsApi_network_port":true}),
            "operationsApi.network.port",
        ),
    ] {
        let (s, b) = n.op(body.clone());
        assert_eq!(s, 400, "{body}: {b}");
        assert!(b["error"].as_str().unwrap().contains(wanted), "{body}: {b}");
        assert_eq!(std::fs::read_to_string(&n.config).unwrap(), before);
    }

    // Nothing at debug level yet.
    let debug_lines = |n: &TestNode| {
        n.ok(json!({"operation":"read_log","level":"debug"}))
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(debug_lines(&n), 0);
    let r = n.ok(
        json!({"operation":"set_configuration","logging_level":"debug",
        "storage_cacheSize":"8M","http_port":9999}),
    );
    assert_eq!(
        r,
        json!({"message":"Configuration successfully set. You must restart Skerry for new config settings to take effect.",
            "restart_required":["storage.cacheSize"],"applied":["logging.level"],
            "not_used_by_skerry":["http.port"]})
    );
    let after = std::fs::read_to_string(&n.config).unwrap();
    assert!(after.contains("# operator's note\n"), "{after}");
    assert!(after.contains("  cacheSize: 8M # tuned\n"), "{after}");
    assert!(after.contains("  level: debug\n"), "{after}");
    assert!(after.contains("http:\n  port: 9999\n"), "{after}");
    // The level applies at once: requests now log at debug.
    n.ok(json!({"operation":"describe_all"}));
    assert!(
        wait_until(Duration::from_secs(5), || debug_lines(&n) > 0),
        "no debug line after set_configuration logging_level debug"
    );
    let c = n.ok(json!({"operation":"get_configuration"}));
    assert_eq!(c["storage"]["cacheSize"], "8M");
}

#[test]
fn read_log_answers_harpers_entries_with_its_filters() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    // Failed logins are logged at warn; successful operations at info.
    for _ in 0..3 {
        n.op_as("nobody", "wrong", json!({"operation":"describe_all"}));
    }
    let all = n.ok(json!({"operation":"read_log"}));
    let all = all.as_array().unwrap().clone();
    assert!(all.len() >= 3, "{all:?}");
    for e in &all {
        let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["timestamp", "thread", "level", "tags", "message"],
            "{e}"
        );
    }
    // Oldest first; desc is the reverse; start and limit page.
    let ts = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|e| e["timestamp"].as_str().unwrap().to_string())
            .collect()
    };
    let mut sorted = ts(&all);
    sorted.sort();
    assert_eq!(ts(&all), sorted);
    let desc = n.ok(json!({"operation":"read_log","order":"desc","limit":2}));
    assert_eq!(
        desc.as_array().unwrap().as_slice(),
        &[all[all.len() - 1].clone(), all[all.len() - 2].clone()][..]
    );
    let page = n.ok(json!({"operation":"read_log","start":1,"limit":2}));
    assert_eq!(page.as_array().unwrap().as_slice(), &all[1..3]);
    let warns = n.ok(json!({"operation":"read_log","level":"warn"}));
    assert!(!warns.as_array().unwrap().is_empty());
    assert!(warns
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["level"] == "warn"));
    let none = n.ok(json!({"operation":"read_log","from":"2000-01-01","until":"2000-12-31"}));
    assert_eq!(none, json!([]));
    let (s, b) = n.op(json!({"operation":"read_log","from":"yesterday"}));
    assert_eq!(
        (
            s,
            b["error"]
                .as_str()
                .unwrap()
                .contains("'from' must be an ISO 8601 date")
        ),
        (400, true)
    );
    // The password of a failed login never reaches the log.
    assert!(
        !all.iter().any(|e| e.to_string().contains("wrong")),
        "{all:?}"
    );
}

#[test]
fn the_log_file_rotates_and_stays_bounded() {
    let n = TestNode::start_with_env(
        &ips(SUITE, 1)[0],
        "",
        &[
            ("LOGGING_ROTATION_MAXSIZE", "4096"),
            ("LOGGING_LEVEL", "debug"),
        ],
    );
    let log_dir = n.dir.join("data/log");
    let files = || {
        let mut v: Vec<String> = std::fs::read_dir(&log_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    // At debug level every request logs a line.
    let mut i = 0;
    assert!(
        wait_until(Duration::from_secs(60), || {
            i += 1;
            n.ok(json!({"operation":"create_database","database":format!("d{i}")}));
            files().len() == 5
        }),
        "{:?}",
        files()
    );
    for _ in 0..100 {
        i += 1;
        n.ok(json!({"operation":"create_database","database":format!("d{i}")}));
    }
    assert_eq!(
        files(),
        [
            "skerry.log",
            "skerry.log.1",
            "skerry.log.2",
            "skerry.log.3",
            "skerry.log.4"
        ]
    );
    for f in files() {
        let len = std::fs::metadata(log_dir.join(&f)).unwrap().len();
        assert!(len <= 4096 + 1024, "{f}: {len}");
    }
    // read_log reads across the rotated files, oldest first.
    let all = n.ok(json!({"operation":"read_log"}));
    assert!(all.as_array().unwrap().len() > 20);
}

#[test]
fn system_information_answers_harpers_sections_and_filters_by_attributes() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    n.ok(json!({"operation":"create_table","database":"dev","table":"dog","primary_key":"id"}));
    n.ok(
        json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1},{"id":2}]}),
    );
    let all = n.ok(json!({"operation":"system_information"}));
    for k in [
        "system",
        "time",
        "cpu",
        "memory",
        "disk",
        "network",
        "harperdb_processes",
        "table_size",
        "metrics",
        "threads",
    ] {
        assert!(all.get(k).is_some(), "missing {k}: {all}");
    }
    assert_eq!(all["system"]["platform"], "linux");
    assert!(all["memory"]["rss"].as_u64().unwrap() > 0);
    assert_eq!(
        all["harperdb_processes"]["core"][0]["pid"],
        n.pid().unwrap()
    );
    let dog = all["table_size"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "dog")
        .cloned()
        .unwrap();
    assert_eq!(dog["record_count"], 2);
    assert_eq!(all["metrics"]["dev"]["tables"]["dog"]["entryCount"], 2);
    let two = n.ok(json!({"operation":"system_information","attributes":["time","memory"]}));
    let keys: Vec<&String> = two.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["time", "memory"]);
    assert_eq!(
        n.ok(json!({"operation":"system_information","attributes":["nothing"]})),
        json!({})
    );
}

#[test]
fn restart_re_executes_in_place_and_applies_the_written_configuration() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    n.ok(json!({"operation":"create_table","database":"dev","table":"dog","primary_key":"id"}));
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1,"name":"Penny"}]}));
    let pid = n.pid().unwrap();
    let proc_info = |n: &TestNode| {
        n.ok(json!({"operation":"system_information","attributes":["harperdb_processes"]}))
            ["harperdb_processes"]["core"][0]
            .clone()
    };
    let started = proc_info(&n)["started"].clone();
    // A body limit that takes effect only after the restart.
    n.ok(json!({"operation":"set_configuration","operationsApi_network_maxBodySize":"1K"}));
    let big = json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":2,"pad":"x".repeat(2000)}]});
    assert_eq!(n.op(big.clone()).0, 200);
    assert_eq!(
        n.ok(json!({"operation":"restart"})),
        json!({"message":"Restarting Skerry. This may take up to 60 seconds."})
    );
    // Back, in the same process (a service manager sees no exit), with the data and the new limit.
    assert!(
        wait_until(Duration::from_secs(30), || { n.op(big.clone()).0 == 413 }),
        "{}",
        n.log()
    );
    let after = proc_info(&n);
    assert_eq!(after["pid"], pid);
    assert_ne!(after["started"], started, "the node did not start again");
    assert_eq!(
        n.ok(json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1],"get_attributes":["name"]})),
        json!([{"name":"Penny"}])
    );
}
