//! Security regressions of the operations API and the data folder (issue 7), each named after
//! the hole it pins. Real `skerry` processes on their own loopback addresses.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const SUITE: u8 = 19;

const DENIED: &str =
    "This operation is not authorized due to role restrictions and/or invalid database items";
const SYSTEM_READ_ONLY: &str = "The 'system' database, tables and records are used internally by HarperDB and cannot be updated or removed.";

/// A TCP connection to `addr` from the loopback address `from`.
fn connect_from(from: &str, addr: &str) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.connect(&addr.parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.into()
}

/// Reads the status line of whatever answer arrives within `timeout`.
fn status_within(s: &mut TcpStream, timeout: Duration) -> Option<u16> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_request_without_credentials_is_refused_before_its_body_is_sent() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    for auth in ["", "Authorization: Basic YWRtaW46d3Jvbmc=\r\n"] {
        let mut s = TcpStream::connect(n.addr()).unwrap();
        // Headers announce a 9 MB body that is never sent: the answer must not wait for it.
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}Content-Length: 9000000\r\n\r\n"
        )
        .unwrap();
        assert_eq!(
            status_within(&mut s, Duration::from_secs(10)),
            Some(401),
            "no answer before the body ({auth:?})"
        );
    }
    // Body validation comes after authentication too (Harper: 401, not the body's 500).
    let (s, b) = post_json(
        &n.addr(),
        None,
        json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1]}),
    );
    assert_eq!((s, b), (401, json!({"error":"Must login"})));
}

#[test]
fn parallel_near_limit_bodies_cost_about_their_size_in_memory() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    let pid = n.pid().unwrap();
    let before = peak_rss(pid);
    // ~9 MB of tiny JSON values: as a tree this is ~40 bytes of memory per byte of text.
    let mut body = String::from(
        r#"{"operation":"search_by_id","database":"dev","table":"dog","get_attributes":["id"],"ids":["#,
    );
    while body.len() < 9_000_000 {
        body.push_str("[],");
    }
    body.push_str("[]]}");
    let clients = 4;
    std::thread::scope(|sc| {
        for _ in 0..clients {
            sc.spawn(|| {
                let (s, b) = post(&n.addr(), Some(&basic(USER, PASS)), body.as_bytes());
                assert_eq!(s, 413, "{b}");
            });
        }
    });
    let grew = peak_rss(pid).saturating_sub(before);
    // Each request holds its body (9 MB) and nothing several times its size.
    assert!(
        grew < clients * 9_000_000 * 2 + (20 << 20),
        "peak RSS grew by {} MB for {clients} bodies of 9 MB",
        grew >> 20
    );
    assert_eq!(
        n.ok(json!({"operation":"describe_all"}))["dev"]["dog"]["record_count"],
        0
    );
}

#[test]
fn one_insert_cannot_add_unbounded_attributes() {
    let n = TestNode::start(
        &ips(SUITE, 1)[0],
        "storage:\n  maxAttributesPerTable: 60\n  maxNewAttributesPerRequest: 40\n",
    );
    create_dog_table(&n);
    let record = |prefix: &str, k: usize| {
        let mut r = serde_json::Map::new();
        r.insert("id".into(), json!(prefix));
        for i in 0..k {
            r.insert(format!("{prefix}{i}"), json!(i));
        }
        Value::Object(r)
    };
    let insert = |rec: Value| {
        n.op(json!({"operation":"insert","database":"dev","table":"dog","records":[rec]}))
    };
    let (s, b) = insert(record("a", 41));
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("maxNewAttributesPerRequest"),
        "{b}"
    );
    assert_eq!(insert(record("b", 40)).0, 200);
    // The table has 3 + 40 attributes; 18 more would pass 60.
    let (s, b) = insert(record("c", 18));
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("maxAttributesPerTable"),
        "{b}"
    );
    // Refused writes wrote nothing.
    let t = n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    assert_eq!(t["record_count"], 1);
    assert_eq!(t["attributes"].as_array().unwrap().len(), 43);
}

#[test]
fn data_directory_and_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let ip = &ips(SUITE, 1)[0];
    let mut n = TestNode::start(ip, "");
    n.stop();
    // A store left world-readable (an older release, a copy by hand) is tightened at start.
    let root = n.data_dir().join("data");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stray = root.join("notes.txt");
    std::fs::write(&stray, "x").unwrap();
    std::fs::set_permissions(&stray, std::fs::Permissions::from_mode(0o644)).unwrap();
    n.start_again();
    let mut stack = vec![root.clone()];
    let mut files = 0;
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", p.display());
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            files += 1;
        }
    }
    assert!(files > 3, "the walk saw the store's files");
    assert!(n.log().contains("owner-only"), "no warning in the log");
}

#[test]
fn structure_users_never_read_the_system_tables() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    for (user, grant) in [("s1", json!(true)), ("s2", json!(["dev", "system"]))] {
        n.ok(json!({"operation":"add_role","role":format!("{user}_role"),
            "permission":{"super_user":false,"structure_user":grant}}));
        n.ok(json!({"operation":"add_user","role":format!("{user}_role"),"username":user,"password":"pw"}));
        let (s, b) = n.op_as(
            user,
            "pw",
            json!({"operation":"search_by_value","database":"system",
            "table":"hdb_user","attribute":"username","value":"*","get_attributes":["*"]}),
        );
        assert_eq!(
            (s, b),
            (
                403,
                json!({"error":DENIED,"unauthorized_access":[{"schema":"system","table":"hdb_user",
                "required_table_permissions":["read"],"required_attribute_permissions":[]}],"invalid_schema_items":[]})
            ),
            "{user}"
        );
        let (s, b) = n.op_as(
            user,
            "pw",
            json!({"operation":"describe_database","database":"system"}),
        );
        assert_eq!(
            (s, b),
            (
                403,
                json!({"error":DENIED,"unauthorized_access":["Your role does not have permission to view database metadata for 'system'"],"invalid_schema_items":[]})
            )
        );
        // Its own database is still its to use.
        let (s, _) = n.op_as(user, "pw", json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1],"get_attributes":["*"]}));
        assert_eq!(s, 200);
    }
}

/// Replays the requests captured from Harper 4.7.29 (tests/fixtures/harper/attribute_permissions)
/// and expects Harper's answers: errors exactly, reads exactly, writes by their message.
#[test]
fn attribute_permissions_are_enforced_as_harper_does() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    n.ok(json!({"operation":"create_database","database":"dev"}));
    n.ok(json!({"operation":"create_table","database":"dev","table":"emp","primary_key":"id"}));
    let orig = json!([{"id":1,"name":"Ann","owner_ssn":"111-22-3333","salary":100},
        {"id":2,"name":"Bob","owner_ssn":"222-33-4444","salary":200}]);
    let roles = [
        (
            "u_ssn",
            json!([{"attribute_name":"owner_ssn","read":false,"insert":false,"update":false}]),
            true,
        ),
        (
            "u_name",
            json!([{"attribute_name":"name","read":true,"insert":true,"update":true}]),
            false,
        ),
        (
            "u_ssn2",
            json!([{"attribute_name":"name","read":true,"insert":true,"update":true},
            {"attribute_name":"salary","read":true,"insert":true,"update":true},
            {"attribute_name":"owner_ssn","read":false,"insert":false,"update":false}]),
            true,
        ),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/harper/attribute_permissions");
    let mut checked = 0;
    // A role may only name attributes the table has (Harper: `Invalid attribute ... in
    // 'attribute_permissions'`), so the records come first.
    n.ok(json!({"operation":"insert","database":"dev","table":"emp","records":orig}));
    for (user, attrs, delete) in roles {
        n.ok(json!({"operation":"add_role","role":format!("r_{user}"),"permission":{"super_user":false,
            "dev":{"tables":{"emp":{"read":true,"insert":true,"update":true,"delete":delete,"attribute_permissions":attrs}}}}}));
        n.ok(json!({"operation":"add_user","role":format!("r_{user}"),"username":user,"password":"pw"}));
        n.ok(json!({"operation":"delete","database":"dev","table":"emp","ids":[1,2,3,4,5]}));
        n.ok(json!({"operation":"insert","database":"dev","table":"emp","records":orig}));
        let mut cases: Vec<Value> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
            .filter(|c: &Value| {
                c["case"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("a_{user}_"))
            })
            .filter(|c: &Value| {
                // u_ssn and u_ssn2 share a prefix: keep each user's own files.
                let rest = &c["case"].as_str().unwrap()[format!("a_{user}_").len()..];
                !rest.starts_with("ssn2") && !rest.starts_with('_')
            })
            .collect();
        cases.sort_by_key(|c| c["order"].as_u64());
        for c in cases {
            let (s, b) = n.op_as(user, "pw", c["request"].clone());
            let case = c["case"].as_str().unwrap();
            assert_eq!(s, c["status"], "{case}: {b}");
            let op = c["request"]["operation"].as_str().unwrap();
            if s != 200 || op.starts_with("search") {
                assert_eq!(b, c["response"], "{case}");
            } else {
                assert_eq!(b["message"], c["response"]["message"], "{case}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 45);
}

#[test]
fn authorize_local_serves_only_json_requests_without_an_origin() {
    let n = TestNode::start(
        &ips(SUITE, 1)[0],
        "authentication:\n  authorizeLocal: true\n",
    );
    let send = |headers: &str| {
        let body =
            r#"{"operation":"add_user","role":"super_user","username":"evil","password":"pw"}"#;
        let req = format!(
            "POST / HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        http_raw(&n.addr(), req.as_bytes(), Duration::from_secs(10))
            .unwrap()
            .0
    };
    // What any web page can make a browser send to localhost.
    assert_eq!(send("Content-Type: text/plain\r\n"), 403);
    assert_eq!(send(""), 403);
    assert_eq!(
        send("Content-Type: application/json\r\nOrigin: http://evil.example\r\n"),
        403
    );
    assert!(!n
        .ok(json!({"operation":"list_users"}))
        .to_string()
        .contains("evil"));
    // A local script's request still works.
    let (s, b) = post_json(&n.addr(), None, json!({"operation":"describe_all"}));
    assert_eq!(s, 200, "{b}");
}

#[test]
fn a_starts_with_prefix_longer_than_any_key_is_answered() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    let long = "x".repeat(300);
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1,"name":format!("{long}yz")},{"id":2,"name":format!("{long}zz")}]}));
    let search = |v: String| {
        n.op(json!({"operation":"search_by_conditions","database":"dev","table":"dog","get_attributes":["id"],
            "conditions":[{"attribute":"name","comparator":"starts_with","value":v}]}))
    };
    assert_eq!(search("a".repeat(70_000)), (200, json!([])));
    // Past the indexed length the answer is still exact (every candidate is re-checked).
    assert_eq!(search(format!("{long}y")), (200, json!([{"id":1}])));
    let (s, _) = http_raw(
        &n.addr(),
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(s, 200);
}

#[test]
fn repeated_login_failures_back_off_per_address() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    for _ in 0..5 {
        assert_eq!(
            n.op_as(USER, "wrong", json!({"operation":"describe_all"}))
                .0,
            401
        );
    }
    // Backing off: even the right password is refused for a moment, without a check...
    let (s, b) = n.op(json!({"operation":"describe_all"}));
    assert_eq!((s, b), (401, json!({"error":"Login failed"})));
    // ...and works again once it has passed.
    assert!(wait_until(Duration::from_secs(10), || n
        .op(json!({"operation":"describe_all"}))
        .0
        == 200));
}

#[test]
fn tokens_die_with_a_password_change_and_cannot_mint_more_tokens() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    n.ok(json!({"operation":"add_role","role":"r","permission":{"super_user":false}}));
    n.ok(json!({"operation":"add_user","role":"r","username":"u","password":"pw"}));
    let t = n
        .op_as(
            "u",
            "pw",
            json!({"operation":"create_authentication_tokens"}),
        )
        .1;
    let op_token = t["operation_token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {op_token}");
    assert_eq!(
        post_json(&n.addr(), Some(&bearer), json!({"operation":"user_info"})).0,
        200
    );
    // A token cannot renew itself into a fresh pair forever.
    let (s, _) = post_json(
        &n.addr(),
        Some(&bearer),
        json!({"operation":"create_authentication_tokens"}),
    );
    assert_eq!(s, 401);
    n.ok(json!({"operation":"alter_user","username":"u","password":"pw2"}));
    let (s, b) = post_json(&n.addr(), Some(&bearer), json!({"operation":"user_info"}));
    assert_eq!((s, b), (401, json!({"error":"invalid token"})));
    let refresh = format!("Bearer {}", t["refresh_token"].as_str().unwrap());
    let (s, _) = post_json(
        &n.addr(),
        Some(&refresh),
        json!({"operation":"refresh_operation_token"}),
    );
    assert_eq!(s, 401, "the refresh token survived the password change");
}

#[test]
fn credentials_never_reach_the_log_even_at_trace_level() {
    let ip = ips(SUITE, 2);
    // The harness's config says `level: info`; the environment override sets trace.
    let trace = [("LOGGING_LEVEL", "trace")];
    let a = TestNode::start_with_env(&ip[0], &common::cluster::repl_yaml(&ip[0]), &trace);
    let b = TestNode::start_with_env(&ip[1], &common::cluster::repl_yaml(&ip[1]), &trace);
    common::cluster::add_node(&a, &b.ip);
    common::cluster::wait_mesh(&[&a, &b], &["system"]);
    let secret = basic(USER, PASS);
    let secret = secret.trim_start_matches("Basic ");
    for n in [&a, &b] {
        let log = n.log();
        assert!(
            log.contains("TRACE") || log.contains("trace"),
            "not at trace level"
        );
        assert!(!log.contains(secret), "credentials in the log of {}", n.ip);
        for clear in [format!("{USER}:{PASS}"), format!("\"password\":\"{PASS}\"")] {
            assert!(!log.contains(&clear), "{clear} in the log of {}", n.ip);
        }
    }
}

#[test]
fn record_operations_never_write_the_system_tables() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    let cases = [
        json!({"operation":"delete","database":"system","table":"hdb_role","ids":["super_user"]}),
        json!({"operation":"insert","database":"system","table":"hdb_user","records":[{"username":"x","password":"p","role":"super_user"}]}),
        json!({"operation":"update","database":"system","table":"hdb_user","records":[{"username":"admin","active":false}]}),
        json!({"operation":"upsert","database":"system","table":"hdb_nodes","records":[{"name":"x"}]}),
    ];
    for c in cases {
        assert_eq!(
            n.op(c.clone()),
            (403, json!({"error": SYSTEM_READ_ONLY})),
            "{c}"
        );
    }
    // Everyone can still log in.
    assert_eq!(n.op(json!({"operation":"list_roles"})).0, 200);
}

#[test]
fn integer_keys_beyond_2_pow_53_are_refused_not_merged() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    let raw = |body: &str| post(&n.addr(), Some(&basic(USER, PASS)), body.as_bytes());
    let (s, b) = raw(
        r#"{"operation":"insert","database":"dev","table":"dog","records":[{"id":9007199254740993,"v":1}]}"#,
    );
    assert_eq!(s, 400, "{b}");
    assert!(b["error"].as_str().unwrap().contains("2^53"), "{b}");
    let (s, _) = raw(
        r#"{"operation":"insert","database":"dev","table":"dog","records":[{"id":9007199254740992,"v":2}]}"#,
    );
    assert_eq!(s, 200);
    // Asking for the neighbour never returns this record.
    let (s, b) = raw(
        r#"{"operation":"search_by_id","database":"dev","table":"dog","ids":[9007199254740993],"get_attributes":["v"]}"#,
    );
    assert_eq!((s, b), (200, json!([])));
}

#[test]
fn restricted_users_cannot_tell_hidden_tables_from_missing_ones() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    n.ok(json!({"operation":"create_table","database":"dev","table":"hidden","primary_key":"id"}));
    n.ok(json!({"operation":"add_role","role":"r","permission":{"super_user":false,
        "dev":{"tables":{"dog":{"read":true,"insert":false,"update":false,"delete":false,"attribute_permissions":[]}}}}}));
    n.ok(json!({"operation":"add_user","role":"r","username":"u","password":"pw"}));
    let missing =
        |item: &str| json!({"error":DENIED,"unauthorized_access":[],"invalid_schema_items":[item]});
    for t in ["hidden", "missing"] {
        let item = format!("Table 'dev.{t}' does not exist");
        for op in [
            json!({"operation":"describe_table","database":"dev","table":t}),
            json!({"operation":"search_by_id","database":"dev","table":t,"ids":[1],"get_attributes":["*"]}),
            json!({"operation":"insert","database":"dev","table":t,"records":[{"id":1}]}),
        ] {
            assert_eq!(
                n.op_as("u", "pw", op.clone()),
                (403, missing(&item)),
                "{op}"
            );
        }
    }
    assert_eq!(
        n.op_as(
            "u",
            "pw",
            json!({"operation":"describe_database","database":"nodb"})
        ),
        (403, missing("database 'nodb' does not exist"))
    );
}

#[test]
fn one_address_cannot_hold_every_connection() {
    let ip = ips(SUITE, 3);
    let n = TestNode::start_with_env(
        &ip[0],
        "",
        &[
            ("OPERATIONSAPI_NETWORK_MAXCONNECTIONS", "32"),
            ("OPERATIONSAPI_NETWORK_MAXCONNECTIONSPERADDRESS", "8"),
        ],
    );
    // More idle connections from one address than the server has slots at all.
    let idle: Vec<TcpStream> = (0..40).map(|_| connect_from(&ip[1], &n.addr())).collect();
    // Over its cap, a connection from that address is closed at once (not left waiting).
    let mut extra = connect_from(&ip[1], &n.addr());
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 1];
    let r = extra.read(&mut b);
    assert!(
        matches!(&r, Ok(0))
            || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    // Another address is served at once.
    let mut s = connect_from(&ip[2], &n.addr());
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(status_within(&mut s, Duration::from_secs(5)), Some(200));
    drop(idle);
}

#[test]
fn a_replication_handshake_trickled_byte_by_byte_is_cut_off() {
    let ip = &ips(SUITE, 1)[0];
    let _n = common::cluster::start_repl(ip);
    let mut s = TcpStream::connect(format!("{ip}:9933")).unwrap();
    let start = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let mut closed = false;
    for &byte in head.iter().cycle().take(60) {
        if s.write_all(&[byte]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(closed, "still open after {:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_full_table_search_streams_instead_of_buffering_the_table() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    let pad = "p".repeat(1000);
    let total = 24_000;
    for chunk in 0..total / 1000 {
        let recs: Vec<Value> = (0..1000)
            .map(|i| json!({"id": chunk * 1000 + i, "pad": pad}))
            .collect();
        n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":recs}));
    }
    let pid = n.pid().unwrap();
    let before = peak_rss(pid);
    let clients = 4;
    std::thread::scope(|sc| {
        for _ in 0..clients {
            sc.spawn(|| {
                let (s, b) = n.op(
                    json!({"operation":"search_by_value","database":"dev","table":"dog",
                    "attribute":"id","value":"*","get_attributes":["*"]}),
                );
                assert_eq!(s, 200);
                assert_eq!(b.as_array().map(Vec::len), Some(total));
            });
        }
    });
    let grew = peak_rss(pid).saturating_sub(before);
    // The table is ~24 MB of records; buffered answers cost several times that per client.
    assert!(grew < 60 << 20, "peak RSS grew by {} MB", grew >> 20);
}

#[test]
fn or_searches_are_bounded_and_stop_at_the_limit() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    let recs: Vec<Value> = (0..500).map(|i| json!({"id": i, "age": i % 50})).collect();
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":recs}));
    let branches = |k: usize| -> Vec<Value> {
        (0..k)
            .map(|i| json!({"attribute":"age","comparator":"greater_than_equal","value": i % 50}))
            .collect()
    };
    let search = |k: usize, limit: Option<u64>| {
        let mut body = json!({"operation":"search_by_conditions","database":"dev","table":"dog",
            "operator":"or","get_attributes":["id"],"conditions":branches(k)});
        if let Some(l) = limit {
            body["limit"] = json!(l);
        }
        n.op(body)
    };
    let (s, b) = search(257, None);
    assert_eq!(s, 400, "{b}");
    assert!(b["error"].as_str().unwrap().contains("at most 256"), "{b}");
    let (s, b) = search(256, Some(3));
    assert_eq!((s, b.as_array().map(Vec::len)), (200, Some(3)));
    // Without a limit every record matches once (duplicates across branches are removed).
    let (s, b) = search(256, None);
    assert_eq!((s, b.as_array().map(Vec::len)), (200, Some(500)));
}

#[test]
fn a_core_panic_stops_the_node_instead_of_leaving_it_half_alive() {
    let mut n = TestNode::start_with_env(
        &ips(SUITE, 1)[0],
        "",
        &[("SKERRY_TEST_CORE_PANIC_TABLE", "boom")],
    );
    n.ok(json!({"operation":"create_table","database":"dev","table":"boom","primary_key":"id"}));
    let _ =
        n.op(json!({"operation":"insert","database":"dev","table":"boom","records":[{"id":1}]}));
    assert!(
        wait_until(Duration::from_secs(10), || !n.is_running()),
        "the node is still up after its core panicked"
    );
    assert!(n.log().contains("core thread panicked"), "{}", n.log());
}

/// Issue 15: with the port in use, the first start created `admin` with a generated password
/// and then failed to bind; the next start ignored HDB_ADMIN_PASSWORD and the admin was locked
/// out. Listeners are now bound before anything is created.
#[test]
fn a_failed_first_start_creates_nothing_and_the_next_one_takes_the_given_password() {
    let ip = ips(SUITE, 1);
    let busy = TestNode::start(&ip[0], "");
    let dir = std::env::temp_dir().join(format!("skerry-failstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = |port: &str| {
        let p = dir.join("c.yaml");
        std::fs::write(
            &p,
            format!(
                "rootPath: {}\noperationsApi:\n  network:\n    port: \"{port}\"\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        p
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skerry"))
        .arg("--config")
        .arg(cfg(&busy.addr()))
        .env("HDB_ADMIN_USERNAME", "admin")
        .env("HDB_ADMIN_PASSWORD", "first")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("operationsApi.network.port"), "{err}");
    assert!(
        !dir.join("data").exists(),
        "the failed start created its data folder"
    );
    // The same rootPath used by a running node is refused with a clear message.
    let mut other = std::process::Command::new(env!("CARGO_BIN_EXE_skerry"))
        .arg("--config")
        .arg(cfg(&format!("{}:9927", ip[0])))
        .env("HDB_ADMIN_USERNAME", "admin")
        .env("HDB_ADMIN_PASSWORD", "second")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        http_raw(
            &format!("{}:9927", ip[0]),
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .is_ok()
    }));
    let (s, _) = post_json(
        &format!("{}:9927", ip[0]),
        Some(&basic("admin", "second")),
        json!({"operation":"describe_all"}),
    );
    assert_eq!(s, 200, "the admin password of the successful first start");
    let twin = std::process::Command::new(env!("CARGO_BIN_EXE_skerry"))
        .arg("--config")
        .arg({
            let p = dir.join("twin.yaml");
            std::fs::write(
                &p,
                format!(
                    "rootPath: {}\noperationsApi:\n  network:\n    port: \"{}:9928\"\n",
                    dir.join("data").display(),
                    ip[0]
                ),
            )
            .unwrap();
            p
        })
        .output()
        .unwrap();
    assert!(!twin.status.success());
    let err = String::from_utf8_lossy(&twin.stderr);
    assert!(
        err.contains("another skerry process is using this rootPath"),
        "{err}"
    );
    let _ = other.kill();
    let _ = other.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 15: `HEAD /health` answered 404, and SIGHUP killed the node (exit 129).
#[test]
fn head_health_answers_and_sighup_does_not_stop_the_node() {
    let mut n = TestNode::start(&ips(SUITE, 1)[0], "");
    let (s, body) = http_raw(
        &n.addr(),
        b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!((s, body.len()), (200, 0));
    let pid = n.pid().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        wait_until(Duration::from_secs(10), || n
            .log()
            .contains("SIGHUP received")),
        "{}",
        n.log()
    );
    assert!(n.is_running(), "SIGHUP stopped the node");
    let (s, _) = n.op(json!({"operation":"describe_all"}));
    assert_eq!(s, 200);
}
