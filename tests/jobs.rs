//! Background jobs (suite 21): the CSV loads, export_local, get_job and
//! search_jobs_by_start_date against Harper 4.7.29's captured answers
//! (tests/fixtures/harper/jobs), a job cut short by a restart, a large load in bounded
//! transactions, and who may run what.

mod common;
use common::cluster::{iso, now_ms};
use common::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SUITE: u8 = 21;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/harper/jobs")
}

fn fixture(case: &str) -> Value {
    let p = fixtures().join(format!("{case}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"))).unwrap()
}

/// The captured cases whose name starts with `prefix`, in capture order.
fn cases(prefix: &str) -> Vec<Value> {
    let mut out: Vec<Value> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension().is_some_and(|x| x == "json"))
                .then(|| serde_json::from_slice::<Value>(&std::fs::read(&p).unwrap()).unwrap())
        })
        .filter(|c| c["case"].as_str().unwrap().starts_with(prefix))
        .collect();
    out.sort_by_key(|c| c["order"].as_u64());
    out
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
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

/// `{"message":"Starting job with id <uuid>","job_id":"<uuid>"}` (Harper's answer, keys in
/// its order); returns the id.
fn started(resp: &Value) -> String {
    assert_eq!(keys(resp), ["message", "job_id"], "{resp}");
    let id = resp["job_id"].as_str().expect("job_id").to_string();
    assert!(is_uuid(&id), "{id}");
    assert_eq!(resp["message"], format!("Starting job with id {id}"));
    id
}

/// Polls get_job until the job is no longer IN_PROGRESS; returns its record.
fn wait_job(n: &TestNode, id: &str, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let done = wait_until(timeout, || {
        let r = n.ok(json!({"operation":"get_job","id":id}));
        last = r[0].clone();
        last["status"] != "IN_PROGRESS"
    });
    assert!(done, "job {id} still running: {last}");
    last
}

/// A finished job record compared with Harper's: same keys in the same order, same status,
/// type, user and message (`ids` maps Harper's job id to ours), datetimes as ordered epoch ms.
fn assert_job_like(ours: &Value, harper: &Value, ids: &BTreeMap<String, String>, what: &str) {
    assert_eq!(keys(ours), keys(harper), "{what}: {ours}");
    for k in ["status", "type", "user"] {
        assert_eq!(ours[k], harper[k], "{what}: {k}");
    }
    let mut msg = harper["message"].as_str().unwrap_or_default().to_string();
    for (h, o) in ids {
        msg = msg.replace(h, o);
    }
    assert_eq!(ours["message"], msg, "{what}");
    let (c, s, e) = (
        ours["created_datetime"].as_u64().expect("created_datetime"),
        ours["start_datetime"].as_u64().expect("start_datetime"),
        ours["end_datetime"].as_u64().expect("end_datetime"),
    );
    assert!(c <= s && s <= e, "{what}: {ours}");
}

/// Two values are the same, numbers by value (Harper's 12345678901234567000 is a double).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A `python3 -m http.server` on `ip:port` serving `dir`, stopped on drop.
struct HttpServer(Child);

impl HttpServer {
    fn start(ip: &str, port: u16, dir: &Path) -> HttpServer {
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", ip])
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            }),
            "http.server did not start"
        );
        HttpServer(child)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Harper's set-up for the captures: dev.dog (records 1-4), dev.cat, role r_dog (dev.dog
/// read/insert/update) and user u_dog.
fn harper_setup(n: &TestNode) {
    n.ok(json!({"operation":"create_database","database":"dev"}));
    n.ok(json!({"operation":"create_table","database":"dev","table":"dog","primary_key":"id"}));
    n.ok(json!({"operation":"create_table","database":"dev","table":"cat","primary_key":"id"}));
    n.ok(
        json!({"operation":"insert","database":"dev","table":"dog","records":[
        {"id":1,"name":"Penny","age":5},{"id":2,"name":"Harper","age":3},
        {"id":3,"name":"Kato","age":7},{"id":4,"name":"Alby","age":1}]}),
    );
    // What Harper's earlier captures (e_update_falsey_values) left in record 1.
    n.ok(
        json!({"operation":"update","database":"dev","table":"dog","records":[
        {"id":1,"name":"","age":0,"flag":false,"x":null}]}),
    );
    n.ok(json!({"operation":"add_role","role":"r_dog","permission":{"super_user":false,"dev":{"tables":{"dog":
        {"read":true,"insert":true,"update":true,"delete":false,"attribute_permissions":[]}}}}}));
    n.ok(json!({"operation":"add_user","role":"r_dog","username":"u_dog","password":"pw","active":true}));
}

/// The credentials a captured case was sent with.
fn send_as(n: &TestNode, case: &Value, req: Value) -> (u16, Value) {
    match case["auth"].as_str() {
        Some(a) if a.contains("u_dog") => n.op_as("u_dog", "pw", req),
        _ => n.op(req),
    }
}

/// Replays Harper's B cases (bulk loads and jobs) in capture order on one node: answers and
/// synchronous errors exactly, job records by shape and fixed texts, loaded records by the
/// values of the loaded columns (types included).
#[test]
fn csv_loads_and_job_records_match_harpers_captures() {
    let ip = &ips(SUITE, 1)[0];
    let n = TestNode::start(ip, "");
    harper_setup(&n);
    let dir = n.data_dir().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x.csv"), "id,name,age\n30,file_a,5\n31,file_b,6\n").unwrap();
    std::fs::write(
        dir.join("dogs.csv"),
        "id,name,age\n40,url_a,7\n41,url_b,8\n",
    )
    .unwrap();
    let _www = HttpServer::start(ip, 8000, &dir);
    let x_csv = dir.join("x.csv").display().to_string();
    let missing = dir.join("does-not-exist.csv").display().to_string();
    // Harper's addresses and paths, and the one documented difference in a message: the
    // status text of a failed URL is the standard reason phrase, not the server's own.
    let subst = |s: &str| {
        s.replace("http://127.0.0.1:8000/", &format!("http://{ip}:8000/"))
            .replace("127.0.0.1:8001", &format!("{ip}:8001"))
            .replace("/tmp/does-not-exist.csv", &missing)
            .replace("/tmp/x.csv", &x_csv)
            .replace("message: File not found", "message: Not Found")
    };
    let subst_v = |v: &Value| -> Value { serde_json::from_str(&subst(&v.to_string())).unwrap() };
    let t0 = now_ms();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut last_job: Option<String> = None;
    let mut header: Vec<String> = Vec::new();
    let mut checked = 0;
    for c in cases("b_") {
        let case = c["case"].as_str().unwrap().to_string();
        let req = subst_v(&c["request"]);
        let expected = subst_v(&c["response"]);
        let op = req["operation"].as_str().unwrap();
        if case.ends_with("_job") {
            let ours = wait_job(&n, last_job.as_deref().unwrap(), Duration::from_secs(60));
            assert_job_like(&ours, &expected[0], &ids, &case);
            checked += 1;
            continue;
        }
        if op == "search_jobs_by_start_date" && c["status"] == 200 && expected != json!([]) {
            let from = iso(t0 - 60_000);
            let to = iso(now_ms() + 60_000);
            let mut r = req.clone();
            r["from_date"] = json!(from);
            r["to_date"] = json!(to);
            let (s, ours) = send_as(&n, &c, r);
            assert_eq!(s, 200, "{case}: {ours}");
            let (ours, harper) = (ours.as_array().unwrap(), expected.as_array().unwrap());
            assert_eq!(ours.len(), harper.len(), "{case}: {ours:?}");
            for (o, h) in ours.iter().zip(harper) {
                assert_eq!(keys(o), keys(h), "{case}");
                for k in ["status", "type", "user", "message"] {
                    assert_eq!(o[k], h[k], "{case}: {k}");
                }
                let start = o["start_datetime"].as_u64().unwrap();
                assert_eq!(o["start_datetime_converted"], iso(start));
            }
            checked += 1;
            continue;
        }
        let (s, ours) = send_as(&n, &c, req.clone());
        assert_eq!(s, c["status"], "{case}: {ours}");
        if case.ends_with("_search_after") {
            assert_loaded(&ours, &expected, &header, &case);
        } else if expected.get("job_id").is_some() {
            let id = started(&ours);
            ids.insert(expected["job_id"].as_str().unwrap().to_string(), id.clone());
            last_job = Some(id);
            if let Some(data) = req["data"].as_str() {
                header = data
                    .lines()
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(str::to_string)
                    .collect();
            } else {
                header = vec!["id".into(), "name".into(), "age".into()];
            }
        } else {
            assert_eq!(ours, expected, "{case}");
        }
        checked += 1;
    }
    assert_eq!(checked, 51);
}

/// Records after a load, compared with Harper's by the loaded columns: same ids, and for each
/// column the same value (missing = null, numbers by value). A record Harper shows with nothing
/// but the loaded columns has nothing else here either. Harper's `__parsed_extra` (the extra
/// cells of a ragged row, stored as a column: a papaparse artefact) is not reproduced: the
/// extra cells are dropped.
fn assert_loaded(ours: &Value, harper: &Value, header: &[String], case: &str) {
    let by_id = |v: &Value| -> BTreeMap<String, Map<String, Value>> {
        v.as_array()
            .unwrap_or_else(|| panic!("{case}: not an array: {v}"))
            .iter()
            .map(|r| (r["id"].to_string(), r.as_object().unwrap().clone()))
            .collect()
    };
    let (ours, harper) = (by_id(ours), by_id(harper));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        harper.keys().collect::<Vec<_>>(),
        "{case}"
    );
    let stamps = ["__createdtime__", "__updatedtime__", "__parsed_extra"];
    for (id, h) in &harper {
        let o = &ours[id];
        for k in header {
            let (ov, hv) = (o.get(k).unwrap_or(&Value::Null), &h[k]);
            assert!(same(ov, hv), "{case} id {id} {k}: ours {ov} Harper {hv}");
        }
        let only_loaded = h
            .iter()
            .all(|(k, v)| v.is_null() || header.contains(k) || stamps.contains(&k.as_str()));
        if only_loaded {
            for (k, v) in o {
                assert!(
                    v.is_null() || header.contains(k) || stamps[..2].contains(&k.as_str()),
                    "{case} id {id}: unexpected {k}={v}"
                );
            }
        }
        assert!(o.get("__parsed_extra").is_none_or(Value::is_null), "{case}");
    }
}

/// A job whose node was killed mid-load is ERROR after the restart (not IN_PROGRESS forever),
/// in Harper's final-record shape, with what it had loaded kept.
#[test]
fn a_job_cut_short_by_a_kill_shows_error_after_the_restart() {
    let ip = &ips(SUITE, 1)[0];
    let mut n = TestNode::start(ip, "");
    create_dog_table(&n);
    // A server that sends a CSV header and one row, then stalls: the job is certainly still
    // running when the node dies.
    let script = n.data_dir().join("stall.py");
    std::fs::write(
        &script,
        r#"import socket, sys, threading, time
def serve(c):
    c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\n\r\nid,name\n1,a\n")
    time.sleep(120)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8002))
s.listen(8)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#,
    )
    .unwrap();
    let mut stall = Command::new("python3")
        .arg(&script)
        .arg(ip)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("{ip}:8002").parse().unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    }));
    let r = n.ok(json!({"operation":"csv_url_load","database":"dev","table":"dog","csv_url":format!("http://{ip}:8002/slow.csv")}));
    let id = started(&r);
    let running = n.ok(json!({"operation":"get_job","id":id}));
    assert_eq!(
        keys(&running[0]),
        [
            "id",
            "type",
            "start_datetime",
            "created_datetime",
            "status",
            "user"
        ]
    );
    assert_eq!(running[0]["status"], "IN_PROGRESS");
    n.kill9();
    let _ = stall.kill();
    let _ = stall.wait();
    n.start_again();
    let after = n.ok(json!({"operation":"get_job","id":id}));
    let rec = &after[0];
    assert_eq!(
        keys(rec),
        [
            "id",
            "status",
            "message",
            "end_datetime",
            "type",
            "start_datetime",
            "created_datetime",
            "user"
        ],
        "{rec}"
    );
    assert_eq!(rec["status"], "ERROR");
    assert_eq!(
        rec["message"],
        "Job interrupted: the node stopped or restarted before the job finished"
    );
    assert_eq!(rec["type"], "csv_url_load");
    assert_eq!(rec["user"], USER);
}

/// 200,000 rows from a file load as many transactions of at most 1,000 records (each batch
/// its own version, so records of one batch share `__createdtime__`), all of them counted.
#[test]
fn a_200k_row_csv_file_loads_in_bounded_transactions() {
    let ip = &ips(SUITE, 1)[0];
    let n = TestNode::start(ip, "");
    create_dog_table(&n);
    let rows = 200_000u64;
    let path = n.data_dir().join("big.csv");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(f, "id,name,age,breed").unwrap();
        for i in 1..=rows {
            writeln!(f, "{i},dog-{i},{},\"breed, {}\"", i % 20, i % 7).unwrap();
        }
    }
    let r =
        n.ok(json!({"operation":"csv_file_load","database":"dev","table":"dog","file_path":path}));
    let id = started(&r);
    let rec = wait_job(&n, &id, Duration::from_secs(600));
    assert_eq!(rec["status"], "COMPLETE", "{rec}");
    assert_eq!(
        rec["message"],
        format!("successfully loaded {rows} of {rows} records")
    );
    let d = n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    assert_eq!(d["record_count"], rows);
    let sample: Vec<u64> = (1..=3_500).collect();
    let got = n.ok(
        json!({"operation":"search_by_id","database":"dev","table":"dog","ids":sample,
        "get_attributes":["id","__createdtime__","breed"]}),
    );
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), 3_500);
    assert_eq!(got[9]["breed"], "breed, 3");
    let mut per_txn: BTreeMap<String, usize> = BTreeMap::new();
    for r in got {
        *per_txn.entry(r["__createdtime__"].to_string()).or_default() += 1;
    }
    assert!(per_txn.len() >= 4, "{per_txn:?}");
    assert!(per_txn.values().all(|&k| k <= 1_000), "{per_txn:?}");
    // The audit log has one entry per batch: the first and the last record were written by
    // different transactions.
    let a = n.ok(
        json!({"operation":"read_audit_log","schema":"dev","table":"dog",
        "search_type":"hash_value","search_values":[1, rows]}),
    );
    let (t1, t2) = (
        &a["1"][0]["timestamp"],
        &a[rows.to_string()][0]["timestamp"],
    );
    assert!(t1.as_f64().unwrap() < t2.as_f64().unwrap(), "{a}");
    assert_eq!(a["1"][0]["user_name"], USER);
}

/// A load stops at its first failed batch even though later batches were already queued to
/// the core: rows 1-2,000 (two batches) are loaded, the batch holding the bad key fails the
/// job, and no row after it is written.
#[test]
fn a_failed_batch_stops_the_load_and_no_later_batch_is_written() {
    let ip = &ips(SUITE, 1)[0];
    let n = TestNode::start(ip, "");
    create_dog_table(&n);
    let mut data = String::from("id,name\n");
    for i in 1..=10_000u32 {
        if i == 2_500 {
            data.push_str("null,bad\n");
        } else {
            data.push_str(&format!("{i},dog-{i}\n"));
        }
    }
    let r = n.ok(json!({"operation":"csv_data_load","database":"dev","table":"dog","data":data}));
    let rec = wait_job(&n, &started(&r), Duration::from_secs(120));
    assert_eq!(rec["status"], "ERROR", "{rec}");
    let msg = rec["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("\"null\" is not a valid hash attribute value (the first 2000 of "),
        "{msg}"
    );
    let d = n.ok(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    assert_eq!(
        d["record_count"], 2_000,
        "rows after the failed batch were written"
    );
    let got = n.ok(
        json!({"operation":"search_by_id","database":"dev","table":"dog",
        "ids":[1, 2_000, 2_001, 3_001, 4_000, 5_000, 10_000],"get_attributes":["id"]}),
    );
    assert_eq!(got, json!([{"id":1},{"id":2000}]));
}

/// Loads that cannot run are refused at once with Harper's texts and start no job; what
/// Harper finds inside the job (bad header, bad URL) ends the job in ERROR.
#[test]
fn bad_csv_requests_are_refused_and_bad_sources_end_in_error() {
    let ip = &ips(SUITE, 1)[0];
    let n = TestNode::start(ip, "");
    create_dog_table(&n);
    let before = n.ok(json!({"operation":"search_jobs_by_start_date","from_date":"2000-01-01","to_date":"2999-01-01"}));
    for (req, status, msg) in [
        (json!({"operation":"csv_data_load","database":"dev","table":"dog","action":"delete","data":"id\n1\n"}), 400,
            "Action is required and must be either insert, update, or upsert"),
        (json!({"operation":"csv_data_load","database":"dev","table":"nope","data":"id\n1\n"}), 400,
            "Table 'dev.nope' does not exist"),
        (json!({"operation":"csv_data_load","database":"nodb","table":"dog","data":"id\n1\n"}), 400,
            "database 'nodb' does not exist"),
        (json!({"operation":"csv_data_load","database":"dev","table":"dog"}), 400, "Data  is required"),
        (json!({"operation":"csv_data_load","database":"dev","table":"dog","data":5}), 400, "'data' must be a string"),
        (json!({"operation":"csv_file_load","database":"dev","table":"dog","file_path":"/no/such.csv"}), 400,
            "No such file or directory /no/such.csv"),
        (json!({"operation":"csv_url_load","database":"dev","table":"dog","csv_url":"file:///etc/passwd"}), 400,
            "'csv_url' must be an http:// or https:// URL"),
        (json!({"operation":"csv_data_load","database":"system","table":"hdb_user","data":"username\nx\n"}), 403,
            "The 'system' database, tables and records are used internally by HarperDB and cannot be updated or removed."),
    ] {
        let (s, b) = n.op(req.clone());
        assert_eq!((s, b["error"].as_str().unwrap_or_default()), (status, msg), "{req}");
    }
    let after = n.ok(json!({"operation":"search_jobs_by_start_date","from_date":"2000-01-01","to_date":"2999-01-01"}));
    assert_eq!(before, after, "a refused load started a job");
    // A header Harper refuses, a row whose key is refused by the write: ERROR, nothing loaded.
    for (data, msg) in [
        (
            "id,na`me\n60,e\n",
            "Invalid column name 'na`me', cancelling load operation",
        ),
        (
            "id,\n61,x\n",
            "Invalid column name '', cancelling load operation",
        ),
    ] {
        let r =
            n.ok(json!({"operation":"csv_data_load","database":"dev","table":"dog","data":data}));
        let rec = wait_job(&n, &started(&r), Duration::from_secs(30));
        assert_eq!(
            (rec["status"].as_str(), rec["message"].as_str()),
            (Some("ERROR"), Some(msg))
        );
    }
    // A row that is not CSV at all (an unterminated quote is read to the end: one odd cell).
    let r = n.ok(json!({"operation":"csv_data_load","database":"dev","table":"dog","data":"id,name\n62,\"never closed\n"}));
    let rec = wait_job(&n, &started(&r), Duration::from_secs(30));
    assert_eq!(rec["status"], "COMPLETE", "{rec}");
    let got = n.ok(json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[60,61,62],"get_attributes":["id","name"]}));
    assert_eq!(got, json!([{"id":62,"name":"never closed\n"}]));
    // Update of ids that are missing: loaded 0, as Harper counts.
    let r = n.ok(json!({"operation":"csv_data_load","action":"update","database":"dev","table":"dog","data":"id,name\n900,a\n"}));
    let rec = wait_job(&n, &started(&r), Duration::from_secs(30));
    assert_eq!(rec["message"], "successfully loaded 0 of 1 records");
    // Header only: nothing parsed.
    let r = n
        .ok(json!({"operation":"csv_data_load","database":"dev","table":"dog","data":"id,name\n"}));
    let rec = wait_job(&n, &started(&r), Duration::from_secs(30));
    assert_eq!(rec["message"], "No records parsed from csv file.");
    // A host that does not resolve.
    let r = n.ok(json!({"operation":"csv_url_load","database":"dev","table":"dog","csv_url":"http://no-such-host.invalid/x.csv"}));
    let rec = wait_job(&n, &started(&r), Duration::from_secs(60));
    assert_eq!(rec["status"], "ERROR");
    assert_eq!(rec["message"], "getaddrinfo ENOTFOUND no-such-host.invalid");
}

/// A user who is not a super_user may load request data into a table it may insert into, as
/// in Harper, but not files of the node or URLs (the node's files include its private keys;
/// a URL can reach what only the node reaches); it sees only its own jobs.
#[test]
fn a_plain_user_loads_data_but_not_node_files_or_urls_and_sees_only_its_jobs() {
    let ip = &ips(SUITE, 1)[0];
    let n = TestNode::start(ip, "");
    harper_setup(&n);
    let r = n.op_as("u_dog", "pw", json!({"operation":"csv_data_load","database":"dev","table":"dog","data":"id,name\n95,u\n"}));
    assert_eq!(r.0, 200, "{}", r.1);
    let id = started(&r.1);
    let rec = wait_job(&n, &id, Duration::from_secs(30));
    assert_eq!(rec["user"], "u_dog");
    assert_eq!(rec["message"], "successfully loaded 1 of 1 records");
    let own = n.op_as("u_dog", "pw", json!({"operation":"get_job","id":id}));
    assert_eq!(own.1[0]["id"], id.as_str());
    let admin_job =
        started(&n.ok(
            json!({"operation":"csv_data_load","database":"dev","table":"dog","data":"id\n96\n"}),
        ));
    assert_eq!(
        n.op_as("u_dog", "pw", json!({"operation":"get_job","id":admin_job})),
        (200, json!([]))
    );
    let forbidden = |handler: &str| {
        json!({"error":"This operation is not authorized due to role restrictions and/or invalid database items",
            "unauthorized_access":[format!("Operation '{handler}' is restricted to 'super_user' roles")],"invalid_schema_items":[]})
    };
    let key = n.data_dir().join("config.yaml");
    for (req, handler) in [
        (
            json!({"operation":"csv_file_load","database":"dev","table":"dog","file_path":key}),
            "csvFileLoad",
        ),
        (
            json!({"operation":"csv_url_load","database":"dev","table":"dog","csv_url":"http://127.0.0.1:1/"}),
            "csvURLLoad",
        ),
        (
            json!({"operation":"export_local","format":"json","path":"/tmp","search_operation":{"operation":"search_by_value","database":"dev","table":"dog","attribute":"id","value":"*"}}),
            "export_local",
        ),
        (
            json!({"operation":"delete_records_before","date":"2000-01-01","database":"dev","table":"dog"}),
            "deleteRecordsBefore",
        ),
        (
            json!({"operation":"delete_audit_logs_before","timestamp":1,"database":"dev","table":"dog"}),
            "deleteAuditLogsBefore",
        ),
    ] {
        assert_eq!(
            n.op_as("u_dog", "pw", req.clone()),
            (403, forbidden(handler)),
            "{req}"
        );
    }
    // Without delete permission on the table nothing else changes: a load into a table the
    // role does not list is Harper's 403 for an unknown table.
    let (s, b) = n.op_as(
        "u_dog",
        "pw",
        json!({"operation":"csv_data_load","database":"dev","table":"cat","data":"id\n1\n"}),
    );
    assert_eq!(s, 403, "{b}");
    assert_eq!(
        b["invalid_schema_items"],
        json!(["Table 'dev.cat' does not exist"])
    );
}

/// export_local as Harper: errors inside the job (d_ cases), a JSON export and a CSV export
/// (d2_ cases, a `sql` SELECT as the search included), files owner-only.
#[test]
fn export_local_writes_harpers_files_and_job_records() {
    use std::os::unix::fs::PermissionsExt;
    let ip = &ips(SUITE, 1)[0];
    let n = TestNode::start(ip, "");
    harper_setup(&n);
    n.ok(json!({"operation":"delete","database":"dev","table":"dog","ids":[1,2,3,4]}));
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[
        {"id":201,"name":"AfterIso"},{"id":301,"name":"A301b"},{"id":302,"name":"U302"},{"id":303,"name":"AfterCut2"}]}));
    let out = n.data_dir().join("exp");
    let subst = |v: &Value| -> Value {
        serde_json::from_str(
            &v.to_string()
                .replace("/tmp/exp_csv", out.join("csv").to_str().unwrap())
                .replace("/tmp/exp", out.to_str().unwrap()),
        )
        .unwrap()
    };
    // Phase 1 of the captures: the folder does not exist yet.
    let mut ids = BTreeMap::new();
    let mut checked = 0;
    for c in cases("d_export_local_") {
        let case = c["case"].as_str().unwrap();
        if case.ends_with("_job") {
            continue;
        }
        let req = subst(&c["request"]);
        let id = started(&n.ok(req));
        ids.insert(
            c["response"]["job_id"].as_str().unwrap().to_string(),
            id.clone(),
        );
        let harper = subst(&fixture(&format!("{case}_job"))["response"][0]);
        let ours = wait_job(&n, &id, Duration::from_secs(30));
        assert_job_like(&ours, &harper, &ids, case);
        checked += 1;
    }
    assert_eq!(checked, 5);
    std::fs::create_dir_all(out.join("csv")).unwrap();
    // JSON: the search's rows as one compact array, no trailing newline.
    let c = fixture("d2_export_local_json");
    let id = started(&n.ok(subst(&c["request"])));
    ids.insert(
        c["response"]["job_id"].as_str().unwrap().to_string(),
        id.clone(),
    );
    let ours = wait_job(&n, &id, Duration::from_secs(30));
    let harper = subst(&fixture("d2_export_local_json_job")["response"][0]);
    assert_job_like(&ours, &harper, &ids, "d2_export_local_json_job");
    assert_eq!(keys(&ours["result"]), ["message", "path"]);
    assert_eq!(
        ours["result"]["message"],
        "Successfully exported JSON locally."
    );
    let path = PathBuf::from(ours["result"]["path"].as_str().unwrap());
    assert_eq!(path.parent(), Some(out.as_path()));
    let stem = path.file_stem().unwrap().to_str().unwrap();
    assert!(
        stem.len() == 13 && stem.bytes().all(|b| b.is_ascii_digit()),
        "{path:?}"
    );
    assert_eq!(path.extension().unwrap(), "json");
    let text = std::fs::read_to_string(&path).unwrap();
    let all = n.ok(json!({"operation":"search_by_value","database":"dev","table":"dog","attribute":"id","value":"*"}));
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), all);
    assert!(!text.ends_with('\n'));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // CSV of chosen attributes with a file name: byte for byte Harper's dogs.csv.
    // Harper's request as captured: a `sql` SELECT as the search.
    let c = fixture("d2_export_local_csv_sql");
    let id = started(&n.ok(subst(&c["request"])));
    ids.insert(
        c["response"]["job_id"].as_str().unwrap().to_string(),
        id.clone(),
    );
    let ours = wait_job(&n, &id, Duration::from_secs(30));
    let harper = subst(&fixture("d2_export_local_csv_sql_job")["response"][0]);
    assert_job_like(&ours, &harper, &ids, "d2_export_local_csv_sql_job");
    assert_eq!(ours["result"], harper["result"]);
    let dogs = std::fs::read_to_string(out.join("csv/dogs.csv")).unwrap();
    let exp_ls = std::fs::read_to_string(fixtures().join("exp-ls.txt")).unwrap();
    let harper_dogs = exp_ls.split("--- /tmp/exp_csv/dogs.csv\n").nth(1).unwrap();
    assert_eq!(dogs, harper_dogs.trim_end_matches('\n'));
    // CSV of whole records: every attribute as a column, strings quoted, numbers bare.
    let c = fixture("d2_export_local_csv");
    let id = started(&n.ok(subst(&c["request"])));
    let ours = wait_job(&n, &id, Duration::from_secs(30));
    assert_eq!(
        ours["result"]["message"],
        "Successfully exported CSV locally."
    );
    let csv = std::fs::read_to_string(ours["result"]["path"].as_str().unwrap()).unwrap();
    let mut lines = csv.lines();
    let head: BTreeSet<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        head,
        BTreeSet::from([
            "\"id\"",
            "\"name\"",
            "\"__createdtime__\"",
            "\"__updatedtime__\""
        ])
    );
    assert_eq!(lines.count(), 4);
    assert!(csv.contains("\n201,\"AfterIso\","), "{csv}");
    // A SQL statement that is not a SELECT has no rows to export: the job fails, and the
    // statement never runs (the records are all there).
    let before = n.ok(json!({"operation":"sql","sql":"SELECT COUNT(*) AS c FROM dev.dog"}));
    let r = n.ok(
        json!({"operation":"export_local","format":"json","path":out.to_str().unwrap(),
        "search_operation":{"operation":"sql","sql":"DELETE FROM dev.dog WHERE id > 0"}}),
    );
    let rec = wait_job(&n, &started(&r), Duration::from_secs(30));
    assert_eq!(rec["status"], "ERROR", "{rec}");
    assert!(
        rec["message"]
            .as_str()
            .unwrap_or_default()
            .contains("must be a SELECT"),
        "{rec}"
    );
    assert_eq!(
        n.ok(json!({"operation":"sql","sql":"SELECT COUNT(*) AS c FROM dev.dog"})),
        before
    );
    // Non-super users: Harper's 403.
    let c = fixture("d2_export_local_non_super_user");
    assert_eq!(
        n.op_as("u_dog", "pw", subst(&c["request"])),
        (403, c["response"].clone())
    );
}
