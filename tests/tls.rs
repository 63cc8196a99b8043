//! Replication over TLS (`wss://`, mutual TLS) and HTTPS: real `skerry` processes on their own
//! loopback addresses (issue 8).

mod common;

use common::cluster::*;
use common::*;
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};
use std::time::Duration;

const SUITE: u8 = 20;

/// A replicating node that listens for replication on TLS only (`wss://ip:9933`).
fn tls_yaml(ip: &str) -> String {
    format!("replication:\n  hostname: {ip}\n  securePort: \"{ip}:9933\"\n  pingInterval: 1s\n  enableRootCAs: false\n")
}

fn start_tls(ips: &[String]) -> Vec<TestNode> {
    start_all_with(ips, tls_yaml)
}

/// `add_node` over TLS with credentials and `verify_tls: false` (a fresh, self-signed peer).
fn add_tls(on: &TestNode, host: &str) {
    let r = on.ok(
        json!({"operation":"add_node","hostname":host,"verify_tls":false,
        "authorization":creds()}),
    );
    assert_eq!(
        r,
        json!({"message": format!("Successfully added '{host}' to cluster")}),
        "add_node {host} on {}",
        on.ip
    );
}

fn cert_serial(st: &Value, peer: &str) -> Option<String> {
    connection(st, peer)?["certificate"]["serial_number"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn three_nodes_form_a_mutual_tls_mesh_and_reconnect_without_credentials_after_restart() {
    let ip = ips(SUITE, 3);
    let mut nodes = start_tls(&ip);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    for n in [a, b, c] {
        assert_eq!(status(n)["url"], format!("wss://{}:9933", n.ip));
    }
    add_tls(a, &b.ip);
    add_tls(a, &c.ip);
    wait_mesh(&[a, b, c], &["system"]);
    // Every link shows the certificate the peer proved itself with.
    for n in [a, b, c] {
        let st = status(n);
        for peer in [a, b, c].iter().filter(|p| p.ip != n.ip) {
            let cert = &connection(&st, &peer.ip).unwrap()["certificate"];
            assert!(
                cert["subject_alt_name"]
                    .as_str()
                    .unwrap()
                    .contains(&peer.ip),
                "{st}"
            );
            assert_eq!(cert["expiring_soon"], false, "{st}");
        }
    }
    create_dog_table(a);
    insert(a, "dog", json!([{"id": "one"}]));
    wait_present(&[a, b, c], "dog", "one");
    // Restart everything: the nodes reconnect by certificate (no credentials were retained).
    for n in nodes.iter_mut() {
        n.restart();
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_mesh(&[a, b, c], &["system", "dev"]);
    insert(c, "dog", json!([{"id": "two"}]));
    wait_present(&[a, b, c], "dog", "two");
}

#[test]
fn a_revoked_certificate_is_cut_off_and_refused_everywhere_the_revocation_reached() {
    let ip = ips(SUITE, 3);
    let nodes = start_tls(&ip);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    add_tls(a, &b.ip);
    add_tls(a, &c.ip);
    wait_mesh(&[a, b, c], &["system"]);
    create_dog_table(a);
    wait_table(&[a, b, c], "dog");
    // add_node on A for C had C's CA sign a certificate for A: A presents that one when it
    // dials C, and its own to everyone else.
    let st = status(c);
    let a_to_c = &connection(&st, &a.ip).unwrap()["client_certificate"];
    assert!(
        a_to_c["issuer"].as_str().is_some_and(|i| i.contains(&c.ip)),
        "{st}"
    );
    // Revoke C's certificate (it has only its own: nobody signed one for it).
    let serial = cert_serial(&status(b), &c.ip).expect("B shows C's certificate");
    assert_eq!(cert_serial(&status(a), &c.ip), Some(serial.clone()));
    a.ok(json!({"operation":"update_node","hostname":c.ip,"revoked_certificates":[serial]}));
    // A and B cut C off (B as soon as the revocation reaches it through hdb_nodes), and C's
    // attempts to come back are refused with the reason.
    let cut_off = |n: &TestNode| {
        wait_until(T, || {
            let st = status(n);
            socket(&st, &c.ip, "dev").is_some_and(|s| {
                s["connected"] == false
                    && s["lastConnectionError"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("revoked"))
            })
        })
    };
    assert!(cut_off(a), "{}", dump(&[a, b, c]));
    assert!(cut_off(b), "{}", dump(&[a, b, c]));
    let refused = |peer: &TestNode| {
        wait_until(T, || {
            let st = status(c);
            socket(&st, &peer.ip, "dev").is_some_and(|s| {
                s["receiving"] == false
                    && s["lastConnectionError"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("revoked"))
            })
        })
    };
    assert!(refused(a) && refused(b), "{}", dump(&[a, b, c]));
    // A and B keep replicating with each other.
    insert(a, "dog", json!([{"id": "after"}]));
    wait_present(&[a, b], "dog", "after");
}

#[test]
fn refusals_leave_the_node_up_and_store_nothing() {
    let ip = ips(SUITE, 3);
    let nodes = start_tls(&ip);
    let (a, b) = (&nodes[0], &nodes[1]);
    add_plain_user(b, "plain");
    let cases = [
        // Wrong password, and a user who is not a super_user.
        json!({"operation":"add_node","hostname":b.ip,"verify_tls":false,
            "authorization":{"username":USER,"password":"wrong"}}),
        json!({"operation":"add_node","hostname":b.ip,"verify_tls":false,
            "authorization":{"username":"plain","password":"pw"}}),
        // verify_tls (the default): B's certificate is signed by a CA A does not know.
        json!({"operation":"add_node","hostname":b.ip,"authorization":creds()}),
    ];
    for c in cases {
        let r = a.ok(c.clone());
        let msg = r["message"].as_str().unwrap();
        assert!(
            msg.contains("but there was an error updating target node"),
            "{c}: {r}"
        );
        // The peer stored nothing about A.
        let rows = b.ok(
            json!({"operation":"search_by_value","database":"system","table":"hdb_nodes",
            "attribute":"name","value":"*","get_attributes":["name"]}),
        );
        assert!(!rows.to_string().contains(&a.ip), "{c}: B stored {rows}");
        a.ok(json!({"operation":"remove_node","hostname":b.ip}));
    }
    // A plain ws:// client on the TLS port gets no WebSocket.
    let plain = std::net::TcpStream::connect(format!("{}:9933", b.ip)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let req =
        tungstenite::ClientRequestBuilder::new(format!("ws://{}:9933/", b.ip).parse().unwrap());
    assert!(tungstenite::client::client(req, plain).is_err());
    for n in [a, b] {
        let (s, _) = http_raw(
            &n.addr(),
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(s, 200);
    }
}

use common::tlspeer::{foreign_ca, mint, node_ca, wss};

fn pull_headers(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-Skerry-Kind", "pull".into()),
        ("X-Skerry-Node", name.into()),
        ("X-Skerry-Database", "system".into()),
    ]
}

#[test]
fn the_tls_port_refuses_every_certificate_it_cannot_trust_for_a_member() {
    let ip = ips(SUITE, 2);
    let (n_ip, member) = (&ip[0], &ip[1]);
    // The node knows `member` through a route (it will try to dial it; nobody answers).
    let n = TestNode::start(
        n_ip,
        &format!("{}  routes:\n    - {member}\n", tls_yaml(n_ip)),
    );
    let ca = node_ca(&n);
    // (case, client certificate and key, expected error text)
    type Case<'a> = (&'a str, Option<(String, String)>, &'a str);
    let cases: Vec<Case> = vec![
        ("no certificate", None, "HTTP 401"),
        (
            "signed by an unknown CA",
            Some(mint(&foreign_ca(), member, -1, 30)),
            "",
        ),
        (
            "a name no hdb_nodes row has",
            Some(mint(&ca, "127.99.99.99", -1, 30)),
            "HTTP 401",
        ),
        ("expired", Some(mint(&ca, member, -30, -1)), ""),
        ("not yet valid", Some(mint(&ca, member, 1, 30)), ""),
    ];
    for (case, client, want) in cases {
        let name = client.as_ref().map_or(member.as_str(), |_| {
            if case.starts_with("a name") {
                "127.99.99.99"
            } else {
                member
            }
        });
        let r = wss(n_ip, 9933, &ca.0, client.as_ref(), &pull_headers(name));
        let e = r.err().unwrap_or_else(|| panic!("{case}: accepted"));
        assert!(e.contains(want), "{case}: {e}");
    }
    // Control: the same request with a good certificate for the member is accepted, so the
    // refusals above were about the certificates.
    let good = mint(&ca, member, -1, 30);
    if let Err(e) = wss(n_ip, 9933, &ca.0, Some(&good), &pull_headers(member)) {
        panic!("a good certificate for the member was refused: {e}");
    }
    // A certificate naming the member, but the socket claims another node.
    let e = wss(
        n_ip,
        9933,
        &ca.0,
        Some(&good),
        &pull_headers("127.99.99.98"),
    )
    .err();
    assert_eq!(e.as_deref(), Some("HTTP 401"));
    let (s, _) = http_raw(
        &n.addr(),
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(s, 200);
}

#[test]
fn certificate_requests_for_another_name_or_garbage_are_not_signed() {
    let ip = ips(SUITE, 1);
    let n = TestNode::start(&ip[0], &tls_yaml(&ip[0]));
    let ca = node_ca(&n);
    let op = |body: Value| -> (u16, Value) {
        let mut ws = wss(
            &ip[0],
            9933,
            &ca.0,
            None,
            &[
                ("X-Skerry-Kind", "op".into()),
                ("X-Skerry-Node", "x".into()),
                ("Authorization", basic(USER, PASS)),
            ],
        )
        .unwrap();
        use skerry::repl::wire::Frame;
        let f = Frame::OpRequest {
            json: body.to_string().into_bytes(),
        };
        ws.send(tungstenite::Message::Binary(f.encode().into()))
            .unwrap();
        loop {
            if let tungstenite::Message::Binary(b) = ws.read().unwrap() {
                if let Ok(Frame::OpResponse { status, json }) = Frame::decode(&b) {
                    return (status, serde_json::from_slice(&json).unwrap());
                }
            }
        }
    };
    let csr_for = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.serialize_request(&key).unwrap().pem().unwrap()
    };
    let back = |host: &str, csr: &str| {
        json!({"operation":"add_node_back","hostname":host,
        "url":format!("wss://{host}:9933"),"csr":csr})
    };
    let (s, b) = op(back("joiner.example", &csr_for("someone-else.example")));
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("not the requesting node"),
        "{b}"
    );
    let (s, b) = op(back(
        "joiner.example",
        "-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n",
    ));
    assert_eq!(s, 400, "{b}");
    // Nothing was stored for the refused requests.
    let rows = n.ok(
        json!({"operation":"search_by_value","database":"system","table":"hdb_nodes",
        "attribute":"name","value":"*","get_attributes":["name"]}),
    );
    assert!(!rows.to_string().contains("joiner"), "{rows}");
    // Control: a request for the requester's own name is signed by the node's CA.
    let (s, b) = op(back("joiner.example", &csr_for("joiner.example")));
    assert_eq!(s, 200, "{b}");
    let cert = b["certificate"].as_str().unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    let info = skerry::tls::info::CertInfo::from_der(&der).unwrap();
    assert_eq!(info.names, ["joiner.example"]);
    assert!(
        info.issuer.contains("Skerry-Certificate-Authority"),
        "{info:?}"
    );
}

#[test]
fn a_tls_handshake_that_never_finishes_frees_its_thread() {
    use std::io::{Read, Write};
    let ip = ips(SUITE, 1);
    let _n = TestNode::start(&ip[0], &tls_yaml(&ip[0]));
    let mut s = std::net::TcpStream::connect(format!("{}:9933", ip[0])).unwrap();
    // The first bytes of a ClientHello, then silence.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    // The node gives up within its handshake deadline (5 s): EOF, an alert or a reset. A
    // read timeout here means the socket was still held after 20 s.
    let r = s.read(&mut buf);
    let timed_out = matches!(&r, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    assert!(!timed_out, "still open after {:?}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn plain_clients_on_the_tls_port_and_tls_clients_on_the_plain_port_are_refused() {
    let ip = ips(SUITE, 1);
    let yaml = format!(
        "replication:\n  hostname: {0}\n  port: \"{0}:9933\"\n  securePort: \"{0}:9934\"\n  enableRootCAs: false\n",
        ip[0]
    );
    let n = TestNode::start(&ip[0], &yaml);
    let ca = node_ca(&n);
    // TLS to the plain port.
    let e = wss(&ip[0], 9933, &ca.0, None, &pull_headers("x")).err();
    assert!(e.is_some_and(|e| e.starts_with("TLS")));
    // Plain WebSocket to the TLS port.
    let plain = std::net::TcpStream::connect(format!("{}:9934", ip[0])).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let req =
        tungstenite::ClientRequestBuilder::new(format!("ws://{}:9934/", ip[0]).parse().unwrap());
    assert!(tungstenite::client::client(req, plain).is_err());
    // And the node is unharmed.
    assert_eq!(status(&n)["url"], format!("ws://{}:9933", ip[0]));
}

#[test]
fn the_operations_api_serves_https_with_the_node_certificate() {
    let ip = ips(SUITE, 1);
    // The harness config has an operationsApi section already: the environment adds the port.
    let n = TestNode::start_with_env(
        &ip[0],
        &tls_yaml(&ip[0]),
        &[(
            "OPERATIONSAPI_NETWORK_SECUREPORT",
            &format!("{}:9926", ip[0]),
        )],
    );
    let ca_path = n.data_dir().join("data/keys/ca.pem");
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&ca_path)
        .args([
            "-u",
            &format!("{USER}:{PASS}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"operation":"describe_all"}"#,
            &format!("https://{}:9926/", ip[0]),
        ])
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{}",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the CA, curl refuses the certificate (it is not a public one).
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://{}:9926/health", ip[0]),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");
}

#[test]
fn operator_certificates_are_used_verified_and_flagged_before_they_expire() {
    let ip = ips(SUITE, 2);
    let ca = common::tlspeer::foreign_ca();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca_path = write("ca.pem", &ca.0);
    // A's certificate is good for a year, B's only for five more days.
    let yaml = |i: usize, days: i64| {
        let (cert, key) = mint(&ca, &ip[i], -1, days);
        format!(
            "{}tls:\n  certificate: {}\n  privateKey: {}\n  certificateAuthority: {ca_path}\n",
            tls_yaml(&ip[i]),
            write(&format!("n{i}.pem"), &cert),
            write(&format!("n{i}.key"), &key)
        )
    };
    let a = TestNode::start(&ip[0], &yaml(0, 365));
    let b = TestNode::start(&ip[1], &yaml(1, 5));
    // verify_tls defaults to true: B's certificate chains to the operator's CA, which A trusts.
    a.ok(json!({"operation":"add_node","hostname":b.ip,"authorization":creds()}));
    wait_mesh(&[&a, &b], &["system"]);
    let st = status(&a);
    let cert = &connection(&st, &b.ip).unwrap()["certificate"];
    assert_eq!(cert["issuer"], "CN=Foreign CA", "{st}");
    assert_eq!(cert["expiring_soon"], true, "{st}");
    assert_eq!(
        connection(&status(&b), &a.ip).unwrap()["certificate"]["expiring_soon"],
        false
    );
}

/// curl over HTTPS trusting `ca_pem`: the HTTP status, or "000" when TLS fails.
fn curl_https(url: &str, ca_pem: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&ca)
        .arg(url)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn certificate_operations_list_add_serve_https_without_restart_and_never_show_a_key() {
    let ip = ips(SUITE, 1);
    let n = TestNode::start_with_env(
        &ip[0],
        &tls_yaml(&ip[0]),
        &[(
            "OPERATIONSAPI_NETWORK_SECUREPORT",
            &format!("{}:9926", ip[0]),
        )],
    );
    let health = format!("https://{}:9926/health", ip[0]);
    let node_ca = common::tlspeer::node_ca(&n).0;
    let list = |n: &TestNode| n.ok(json!({"operation":"list_certificates"}));
    let entry = |l: &Value, name: &str| {
        l.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };

    let l = list(&n);
    let own = entry(&l, &ip[0]);
    assert_eq!(own["uses"], json!(["replication", "https"]), "{l}");
    assert_eq!(own["private_key_name"], "node.key");
    assert_eq!(own["is_authority"], false);
    assert_eq!(own["details"]["subject"], format!("CN={}", ip[0]));
    assert_eq!(
        own["details"]["subject_alt_name"],
        format!("IP Address:{}", ip[0])
    );
    let ca_entry = entry(&l, &format!("Skerry-Certificate-Authority-{}", ip[0]));
    assert_eq!(ca_entry["is_authority"], true, "{l}");
    assert_eq!(curl_https(&health, &node_ca), "200");

    // super_user only, with Harper's message.
    n.ok(json!({"operation":"add_role","role":"reader","permission":{"super_user":false}}));
    n.ok(json!({"operation":"add_user","role":"reader","username":"r","password":"pw","active":true}));
    let (s, b) = n.op_as("r", "pw", json!({"operation":"list_certificates"}));
    assert_eq!(s, 403);
    assert_eq!(
        b["unauthorized_access"][0],
        "Operation 'listCertificates' is restricted to 'super_user' roles"
    );

    let foreign = common::tlspeer::foreign_ca();
    let (leaf, leaf_key) = mint(&foreign, &ip[0], -1, 30);
    let (_, other_key) = mint(&foreign, &ip[0], -1, 30);
    // Refusals: each a 400 with a clear message, nothing stored.
    for (body, wanted) in [
        (
            json!({"operation":"add_certificate","certificate":leaf}),
            "'name' is required",
        ),
        (
            json!({"operation":"add_certificate","name":"x"}),
            "'certificate' is required",
        ),
        (
            json!({"operation":"add_certificate","name":"x","certificate":"garbage"}),
            "'certificate' is not a PEM certificate",
        ),
        (
            json!({"operation":"add_certificate","name":"x","certificate":leaf,"is_authority":true}),
            "not a certificate authority",
        ),
        (
            json!({"operation":"add_certificate","name":"x","certificate":leaf,"private_key":other_key,"uses":["https"]}),
            "does not belong to the certificate",
        ),
        (
            json!({"operation":"add_certificate","name":"x","certificate":leaf,"uses":["https"]}),
            "needs its 'private_key'",
        ),
        (
            json!({"operation":"add_certificate","name":ip[0],"certificate":leaf}),
            "manages itself",
        ),
        (
            json!({"operation":"remove_certificate","name":ip[0]}),
            "manages itself",
        ),
        (
            json!({"operation":"remove_certificate"}),
            "'name' is required",
        ),
        (
            json!({"operation":"remove_certificate","name":"no-such-cert"}),
            "no-such-cert not found",
        ),
    ] {
        let (s, b) = n.op(body.clone());
        assert_eq!(s, 400, "{body} -> {b}");
        assert!(
            b["error"].as_str().unwrap_or("").contains(wanted),
            "{body} -> {b}"
        );
    }
    assert_eq!(
        list(&n).as_array().unwrap().len(),
        l.as_array().unwrap().len()
    );

    // An added https certificate is served at once; its key is never answered back.
    assert_eq!(
        n.ok(
            json!({"operation":"add_certificate","name":"leaf","certificate":leaf,
            "private_key":leaf_key,"is_authority":false,"uses":["https"]})
        ),
        json!({"message":"Successfully added certificate: leaf"})
    );
    assert_eq!(curl_https(&health, &foreign.0), "200");
    assert_eq!(curl_https(&health, &node_ca), "000");
    let l = list(&n);
    assert!(!l.to_string().contains("PRIVATE KEY"), "{l}");
    let added = entry(&l, "leaf");
    assert_eq!(added["details"]["issuer"], "CN=Foreign CA", "{l}");
    assert_eq!(added["uses"], json!(["https"]));
    assert_eq!(added["private_key_name"], "leaf.key");
    assert!(added["__updatedtime__"].as_f64().is_some());
    assert_eq!(entry(&l, &ip[0])["uses"], json!(["replication"]));
    let key_file = n.data_dir().join("data/keys/added/leaf.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Removing it brings the node's own certificate back, again without a restart.
    assert_eq!(
        n.ok(json!({"operation":"remove_certificate","name":"leaf"})),
        json!({"message":"Successfully removed leaf"})
    );
    assert_eq!(curl_https(&health, &node_ca), "200");
    assert!(!key_file.exists());
}

#[test]
fn an_added_authority_lets_verify_tls_accept_a_peer_it_signed() {
    let ip = ips(SUITE, 2);
    let foreign = common::tlspeer::foreign_ca();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = mint(&foreign, &ip[1], -1, 365);
    let (c, k) = (dir.path().join("b.pem"), dir.path().join("b.key"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    let a = TestNode::start(&ip[0], &tls_yaml(&ip[0]));
    let b = TestNode::start(
        &ip[1],
        &format!(
            "{}tls:\n  certificate: {}\n  privateKey: {}\n",
            tls_yaml(&ip[1]),
            c.display(),
            k.display()
        ),
    );
    let add = json!({"operation":"add_node","hostname":b.ip,"authorization":creds()});
    // verify_tls defaults to true, and A does not know B's issuer yet.
    let r = a.ok(add.clone());
    assert!(
        r["message"].as_str().unwrap().contains("UnknownIssuer"),
        "{r}"
    );
    a.ok(json!({"operation":"add_certificate","name":"foreign-ca","certificate":foreign.0,"is_authority":true}));
    let r = a.ok(add);
    assert!(!r["message"].as_str().unwrap().contains("error"), "{r}");
    wait_mesh(&[&a, &b], &["system"]);
}
