//! Security regressions (issue 7): each test is named after the hole it pins and fails on the
//! code before the fix. Real `skerry` processes; forged peers are scripted in
//! `tests/common/fakepeer.rs`.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::cluster::*;
use common::fakepeer::{FakePeer, Script};
use common::*;
use serde_json::{json, Value};
use skerry::core::txn::{encode_ops, Actor, Txn, TxnOp};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SUITE: u8 = 18;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An HS256 token for `admin` signed with the empty key: what the old replication listener
/// accepted as a super_user.
fn forged_token() -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(br#"{"username":"admin","typ":"operation","exp":1}"#);
    let input = format!("{header}.{payload}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"");
    let sig = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// Opens a replication WebSocket with these headers; Ok(socket) or Err(HTTP status).
fn repl_handshake(
    ip: &str,
    headers: &[(&str, String)],
) -> Result<tungstenite::WebSocket<std::net::TcpStream>, u16> {
    let sock = std::net::TcpStream::connect(format!("{ip}:9933")).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut req =
        tungstenite::ClientRequestBuilder::new(format!("ws://{ip}:9933/").parse().unwrap())
            .with_sub_protocol(skerry::repl::wire::SUBPROTOCOL);
    for (k, v) in headers {
        req = req.with_header(*k, v.clone());
    }
    match tungstenite::client::client(req, sock) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            Err(resp.status().as_u16())
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

/// Sends one node-to-node operation on an accepted `op` socket and returns the answer.
fn op_over(ws: &mut tungstenite::WebSocket<std::net::TcpStream>, body: Value) -> (u16, Value) {
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
}

#[test]
fn replication_port_refuses_a_token_signed_with_the_empty_key() {
    let ip = ips(SUITE, 1);
    let n = start_repl(&ip[0]);
    let forged = format!("Bearer {}", forged_token());
    // The bootstrap operation socket: the forged super_user must not get in.
    let r = repl_handshake(
        &ip[0],
        &[
            ("X-Skerry-Kind", "op".into()),
            ("X-Skerry-Node", "attacker".into()),
            ("Authorization", forged.clone()),
        ],
    );
    assert_eq!(r.err(), Some(401), "forged token accepted on an op socket");
    // A full copy of `system` (password hashes) must not be handed out either.
    let r = repl_handshake(
        &ip[0],
        &[
            ("X-Skerry-Kind", "pull".into()),
            ("X-Skerry-Node", "attacker".into()),
            ("X-Skerry-Database", "system".into()),
            ("Authorization", forged),
        ],
    );
    assert_eq!(r.err(), Some(401), "forged token accepted on a pull socket");

    // Control: a real token of this node is accepted (so the refusals above are about the
    // signature, not about tokens as such) ...
    let tokens = n.ok(json!({"operation":"create_authentication_tokens"}));
    let real = format!("Bearer {}", tokens["operation_token"].as_str().unwrap());
    let mut ws = repl_handshake(
        &ip[0],
        &[
            ("X-Skerry-Kind", "op".into()),
            ("X-Skerry-Node", "x".into()),
            ("Authorization", real),
        ],
    )
    .expect("a real operation token opens an op socket");
    let (status, body) = op_over(&mut ws, json!({"operation":"no_such_thing"}));
    assert_eq!(status, 400, "{body}");
    // ... and a valid user who is not a super_user gets the same answer as a wrong password.
    add_plain_user(&n, "plain");
    for auth in [basic("plain", "pw"), basic("admin", "wrong")] {
        let r = repl_handshake(
            &ip[0],
            &[
                ("X-Skerry-Kind", "op".into()),
                ("X-Skerry-Node", "x".into()),
                ("Authorization", auth),
            ],
        );
        assert_eq!(r.err(), Some(401));
    }
}

/// A Harper-format password hash (salt ‖ hex(sha256(password ‖ salt))), accepted by Skerry.
fn sha_hash(password: &str) -> String {
    let salt = "abcdefghijklmnop";
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{password}{salt}").as_bytes(),
    );
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{salt}{hex}")
}

fn user_put(username: &str) -> TxnOp {
    let rec = json!({"username": username, "password": sha_hash("pw"), "role": "super_user", "active": true});
    TxnOp::Put {
        table: "hdb_user".into(),
        pk_attr: "username".into(),
        pk: skerry::store::keys::encode_pk(&json!(username)).unwrap(),
        record: rec.to_string().into_bytes(),
    }
}

fn system_txn(origin: &str, version: u64, actor: Actor, ops: Vec<TxnOp>) -> Txn {
    // Round-trip through the audit encoding so the test sends exactly what a node would.
    let (actor, ops) = skerry::core::txn::decode_entry(&encode_ops(&actor, &ops)).unwrap();
    Txn {
        origin: origin.into(),
        version,
        db: "system".into(),
        actor,
        ops,
    }
}

#[test]
fn forged_user_rows_from_a_peer_are_not_applied() {
    let ip = ips(SUITE, 2);
    let (victim_ip, fake_ip) = (&ip[0], &ip[1]);
    let v = (now_ms() + 1) << 12;
    let fake = FakePeer::start(
        fake_ip,
        Script {
            name: fake_ip.clone(),
            system_txns: vec![
                // An origin that is not a member at all.
                system_txn(
                    "evil-node",
                    v,
                    Actor::User("admin".into()),
                    vec![user_put("evil1")],
                ),
                // The member itself, but no super_user made the change.
                system_txn(fake_ip, v + 1, Actor::None, vec![user_put("evil2")]),
                system_txn(
                    fake_ip,
                    v + 2,
                    Actor::Node(fake_ip.clone()),
                    vec![user_put("evil3")],
                ),
                // Control: a change by a super_user the victim knows is applied.
                system_txn(
                    fake_ip,
                    v + 3,
                    Actor::User("admin".into()),
                    vec![user_put("legit")],
                ),
            ],
            op_answer: None,
        },
    );
    // The victim knows the fake as a member through a route (accepted by address).
    let victim = TestNode::start(
        victim_ip,
        &format!("{}  routes:\n    - {fake_ip}\n", repl_yaml(victim_ip)),
    );
    assert!(
        wait_until(T, || user_names(&victim).contains("legit")),
        "the control write never arrived; fake saw {:?}\n{}",
        fake.seen.lock().unwrap().frames,
        victim.log()
    );
    // The whole batch was handled together with the control write: the forgeries are gone.
    let users = user_names(&victim);
    for forged in ["evil1", "evil2", "evil3"] {
        assert!(!users.contains(forged), "{forged} was applied: {users:?}");
        let (status, _) = victim.op_as(forged, "pw", json!({"operation":"describe_all"}));
        assert_eq!(status, 401, "{forged} can log in");
    }
}

#[test]
fn dialing_side_refuses_a_peer_at_an_address_that_is_not_the_members() {
    let ip = ips(SUITE, 3);
    let (victim_ip, member_ip, fake_ip) = (&ip[0], &ip[1], &ip[2]);
    // The fake answers at its own address but claims to be the member.
    let fake = FakePeer::start(
        fake_ip,
        Script {
            name: member_ip.clone(),
            system_txns: vec![],
            op_answer: Some((200, json!({"message": "ok", "nodeName": member_ip}))),
        },
    );
    let victim = start_repl(victim_ip);
    // A member row whose URL points somewhere else than the member's address.
    victim.ok(json!({"operation":"add_node","hostname": member_ip,
        "url": format!("ws://{fake_ip}:9933"), "authorization": creds()}));
    let refused = wait_until(T, || {
        socket(&status(&victim), member_ip, "system")
            .and_then(|s| {
                s["lastConnectionError"]["message"]
                    .as_str()
                    .map(str::to_string)
            })
            .is_some_and(|m| m.contains("identity check failed"))
    });
    assert!(refused, "{}", victim.log());
    assert_eq!(
        fake.subscribes(),
        0,
        "the victim asked an impostor for data: {:?}",
        fake.seen.lock().unwrap().frames
    );
}

#[test]
fn retained_credentials_never_reach_a_replicated_row() {
    let ip = ips(SUITE, 2);
    let nodes = start_all(&ip);
    let (a, b) = (&nodes[0], &nodes[1]);
    add_node_with(a, &b.ip, json!({"retain_authorization": true}));
    wait_mesh(&[a, b], &["system"]);
    let rows = |n: &TestNode| {
        n.ok(
            json!({"operation":"search_by_value","database":"system","table":"hdb_nodes",
            "attribute":"name","value":"*","get_attributes":["*"]}),
        )
    };
    wait_until(T, || rows(b).as_array().is_some_and(|r| r.len() == 2));
    for n in [a, b] {
        let text = rows(n).to_string();
        assert!(
            !text.contains("Basic "),
            "credentials in hdb_nodes on {}: {text}",
            n.ip
        );
    }
    a.ok(json!({"operation":"update_node","hostname": b.ip, "retain_authorization": false}));
    assert!(!rows(a).to_string().contains("Basic "));
}

#[test]
fn a_peer_cannot_push_versions_to_the_end_of_time_or_panic_the_core() {
    let ip = ips(SUITE, 2);
    let (victim_ip, fake_ip) = (&ip[0], &ip[1]);
    let _fake = FakePeer::start(
        fake_ip,
        Script {
            name: fake_ip.clone(),
            system_txns: vec![system_txn(
                fake_ip,
                u64::MAX - 1,
                Actor::User("admin".into()),
                vec![user_put("late")],
            )],
            op_answer: None,
        },
    );
    let victim = TestNode::start(
        victim_ip,
        &format!("{}  routes:\n    - {fake_ip}\n", repl_yaml(victim_ip)),
    );
    let refused = wait_until(T, || {
        socket(&status(&victim), fake_ip, "system")
            .and_then(|s| {
                s["lastConnectionError"]["message"]
                    .as_str()
                    .map(str::to_string)
            })
            .is_some_and(|m| m.contains("outside what this node accepts"))
    });
    assert!(refused, "{}", victim.log());
    assert!(!user_names(&victim).contains("late"));
    // The clock is unharmed: a local write gets a version of now, not of the far future.
    create_dog_table(&victim);
    let r = victim
        .ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1}],"write_details":true}));
    let t = r["txn_time"].as_f64().unwrap();
    assert!((t - now_ms() as f64).abs() < 60_000.0, "txn_time {t}");
}
