//! Watching a node: `/metrics` (Prometheus text, scraped and parsed), `/ready`, the status
//! page in a real headless Chromium, and the lag and copy progress `cluster_status` reports
//! (issue 11).

mod common;

use common::cluster::*;
use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const SUITE: u8 = 28;

fn get(n: &TestNode, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    let (s, body) = http_raw(&n.addr(), req.as_bytes(), Duration::from_secs(10)).unwrap();
    (s, String::from_utf8_lossy(&body).into_owned())
}

/// Parses the Prometheus text format: `name{labels}` -> value (comments skipped).
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(
            out.insert(key.to_string(), v).is_none(),
            "duplicate series {key}"
        );
    }
    out
}

fn metric(m: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    m.iter()
        .find(|(k, _)| {
            k.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(l, v)| k.contains(&format!("{l}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
}

#[test]
fn metrics_count_operations_tables_and_replication_links() {
    let ip = ips(SUITE, 2);
    let nodes = start_all(&ip);
    let (a, b) = (&nodes[0], &nodes[1]);
    add_node(a, &b.ip);
    wait_mesh(&[a, b], &["system"]);
    create_table(a, "dog");
    wait_table(&[a, b], "dog");
    for i in 0..20 {
        put(a, "dog", &format!("d{i}"));
    }
    wait_present(&[b], "dog", "d19");
    let (s, _) = a.op(json!({"operation":"describe_table","database":"nope","table":"x"}));
    assert_eq!(s, 404);

    let scrape = |n: &TestNode| {
        let (s, text) = get(n, "/metrics", None);
        assert_eq!(s, 200, "{text}");
        parse_metrics(&text)
    };
    let m = scrape(a);
    assert!(
        metric(
            &m,
            "skerry_operations_total",
            &[("operation", "insert"), ("status", "200")]
        )
        .unwrap()
            >= 20.0
    );
    assert_eq!(
        metric(
            &m,
            "skerry_operations_total",
            &[("operation", "describe_table"), ("status", "404")]
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &m,
            "skerry_operation_duration_seconds_count",
            &[("operation", "insert")]
        )
        .unwrap()
            >= 20.0
    );
    assert!(metric(&m, "skerry_group_commit_seconds_count", &[]).unwrap() >= 20.0);
    assert_eq!(
        metric(
            &m,
            "skerry_table_records",
            &[("database", "dev"), ("table", "dog")]
        ),
        Some(20.0)
    );
    assert_eq!(metric(&m, "skerry_up", &[]), Some(1.0));
    assert!(metric(&m, "skerry_resident_memory_bytes", &[]).unwrap() > 1e6);
    let peer = [("peer", b.ip.as_str()), ("database", "dev")];
    for d in ["receiving", "sending"] {
        let mut l = peer.to_vec();
        l.push(("direction", d));
        assert_eq!(
            metric(&m, "skerry_replication_connected", &l),
            Some(1.0),
            "{d}"
        );
    }
    assert!(metric(&m, "skerry_replication_records_sent_total", &peer).unwrap() >= 20.0);
    // B acknowledged everything: no lag once the acks are in.
    assert!(wait_until(Duration::from_secs(10), || {
        let m = scrape(a);
        metric(&m, "skerry_replication_lag_records", &peer) == Some(0.0)
    }));
    let mb = scrape(b);
    assert!(
        metric(
            &mb,
            "skerry_replication_records_received_total",
            &[("peer", a.ip.as_str()), ("database", "dev")]
        )
        .unwrap()
            >= 20.0
    );
}

#[test]
fn cluster_status_shows_a_stopped_peers_lag_in_records_and_seconds() {
    let ip = ips(SUITE, 2);
    let mut nodes = start_all(&ip);
    add_node(&nodes[0], &nodes[1].ip);
    wait_mesh(&refs(&nodes), &["system"]);
    create_table(&nodes[0], "dog");
    wait_table(&refs(&nodes), "dog");
    put(&nodes[0], "dog", "first");
    wait_present(&[&nodes[1]], "dog", "first");
    let b_ip = nodes[1].ip.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            socket(&status(&nodes[0]), &b_ip, "dev").is_some_and(|s| s["lagRecords"] == 0)
        }),
        "{}",
        status(&nodes[0])
    );
    nodes[1].stop();
    // 3 transactions of 2 records B has not acknowledged.
    for i in 0..3 {
        insert(
            &nodes[0],
            "dog",
            json!([{"id": format!("x{i}")}, {"id": format!("y{i}")}]),
        );
    }
    let st = status(&nodes[0]);
    let s = socket(&st, &b_ip, "dev").unwrap();
    assert_eq!(s["lagRecords"], 6, "{st}");
    let own = s["lag"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["origin"] == nodes[0].ip)
        .unwrap();
    assert_eq!(own["records"], 6, "{st}");
    assert!(own["seconds"].as_f64().unwrap() >= 0.0);
    // Back up, it catches up and the lag goes to zero.
    nodes[1].restart();
    assert!(
        wait_until(Duration::from_secs(20), || {
            socket(&status(&nodes[0]), &b_ip, "dev").is_some_and(|s| s["lagRecords"] == 0)
        }),
        "{}",
        status(&nodes[0])
    );
}

#[test]
fn ready_follows_the_core_and_monitoring_endpoints_obey_their_access_setting() {
    let ip = ips(SUITE, 1);
    let n = TestNode::start(&ip[0], &repl_yaml(&ip[0]));
    // Ready once replication has loaded its membership (a moment after /health).
    assert!(wait_until(Duration::from_secs(10), || get(
        &n, "/ready", None
    )
    .0 == 200));
    let (s, body) = get(&n, "/ready", None);
    assert_eq!(
        (s, body.as_str()),
        (200, r#"{"ready":true,"core":true,"replication":true}"#)
    );
    drop(n);

    let n = TestNode::start_with_env(
        &ip[0],
        "",
        &[
            ("OPERATIONSAPI_METRICS", "authenticated"),
            ("OPERATIONSAPI_STATUSPAGE", "off"),
        ],
    );
    let (s, _) = get(&n, "/metrics", None);
    assert_eq!(s, 401);
    let (s, text) = get(&n, "/metrics", Some(&basic(USER, PASS)));
    assert_eq!(s, 200);
    assert!(text.contains("skerry_up"));
    let (s, _) = get(&n, "/status", None);
    assert_eq!(s, 404);
    // A browser gets a Basic challenge.
    let out = std::process::Command::new("curl")
        .args(["-s", "-i", &format!("http://{}/metrics", n.addr())])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        head.contains("www-authenticate: basic realm=\"skerry\""),
        "{head}"
    );
}

/// Renders `url` in headless Chromium and returns the DOM (None when Chromium is missing).
fn chromium(url: &str, screenshot: Option<&std::path::Path>) -> Option<String> {
    let bin = ["chromium", "chromium-browser"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })?;
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--window-size=1100,700",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_status_page_renders_the_node_its_tables_and_each_peer_in_a_real_browser() {
    let ip = ips(SUITE, 3);
    let mut nodes = start_all(&ip);
    add_node(&nodes[0], &nodes[1].ip);
    add_node(&nodes[0], &nodes[2].ip);
    wait_mesh(&refs(&nodes), &["system"]);
    create_table(&nodes[0], "dog");
    wait_table(&refs(&nodes), "dog");
    for i in 0..5 {
        put(&nodes[0], "dog", &format!("d{i}"));
    }
    wait_present(&refs(&nodes), "dog", "d4");
    let url = format!("http://{}/status", nodes[0].addr());
    let dom = match chromium(&url, None) {
        Some(d) => d,
        None if std::env::var_os("CI").is_some() => {
            panic!("chromium is required in CI (scripts/test.sh installs it)")
        }
        None => {
            eprintln!("SKIPPED: chromium is not installed");
            return;
        }
    };
    assert!(
        dom.contains(&format!("<span id=\"node\">{}</span>", nodes[0].ip)),
        "{dom}"
    );
    assert!(dom.contains("healthy"), "{dom}");
    for peer in [&nodes[1].ip, &nodes[2].ip] {
        let row = format!(
            "<tr class=\"link\"><td>{peer}</td><td>dev</td><td><span class=\"ok\">connected</span>"
        );
        assert!(dom.contains(&row), "no connected dev row for {peer}: {dom}");
    }
    assert!(
        dom.contains("<tr class=\"table\"><td>dev</td><td>dog</td><td>5</td>"),
        "{dom}"
    );
    // A down peer shows as down.
    drop(nodes.pop());
    assert!(wait_until(Duration::from_secs(20), || {
        chromium(&url, None).is_some_and(|d| {
            d.contains(&format!(
                "<tr class=\"link\"><td>{}</td><td>dev</td><td><span class=\"bad\">down</span>",
                ip[2]
            ))
        })
    }));
    // The README's screenshot, refreshed when asked.
    if let Some(p) = std::env::var_os("SKERRY_STATUS_SCREENSHOT") {
        chromium(&url, Some(std::path::Path::new(&p)));
    }
}

#[test]
fn json_logs_name_the_node_on_every_line_and_log_requests_when_asked() {
    let ip = ips(SUITE, 1);
    let n = TestNode::start_with_env(
        &ip[0],
        "",
        &[("LOGGING_FORMAT", "json"), ("LOGGING_REQUESTS", "true")],
    );
    n.ok(json!({"operation":"describe_all"}));
    n.op_as(
        USER,
        "not-the-password",
        json!({"operation":"describe_all"}),
    );
    assert!(wait_until(Duration::from_secs(5), || n
        .log()
        .contains("describe_all")));
    let log = n.log();
    let mut lines = 0;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["node"], n.ip, "{line}");
        for k in ["timestamp", "level", "target", "message"] {
            assert!(v.get(k).is_some(), "{k} missing: {line}");
        }
        lines += 1;
    }
    assert!(lines >= 3, "{log}");
    assert!(
        log.lines().any(|l| l.contains("\"level\":\"info\"")
            && l.contains("describe_all")
            && l.contains(": 200 in")),
        "{log}"
    );
    assert!(!log.contains("not-the-password"), "{log}");
}
