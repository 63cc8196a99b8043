//! Hostile replication peers (issue 9, "hardened input"): a real `skerry` process gets garbage,
//! truncated and oversized input on its replication port, before any handshake, on an
//! authenticated `op` socket and on a member's `pull` stream, and from a member it dials
//! itself (during a full copy and on the stream). Each time the node must drop that
//! connection, stay up, keep answering operations and keep its data exactly as it was.
//! The decoder itself is property-tested in `repl::wire::prop_tests`.

mod common;

use common::cluster::*;
use common::*;
use serde_json::{json, Value};
use skerry::core::txn::{Actor, Txn, TxnKind, TxnOp};
use skerry::core::CopyRow;
use skerry::repl::wire::{Frame, PROTOCOL_VERSION, SUBPROTOCOL};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::handshake::server::{Request, Response};
use tungstenite::{Message, WebSocket};

const SUITE: u8 = 33;

/// Small, so "oversized" is cheap to send.
const MAX_FRAME: usize = 64 * 1024;

fn node_yaml(ip: &str, routes: &[&str]) -> String {
    let mut y = format!("{}  maxFrameSize: {MAX_FRAME}\n", repl_yaml(ip));
    if !routes.is_empty() {
        y.push_str("  routes:\n");
        for r in routes {
            y.push_str(&format!("    - {r}\n"));
        }
    }
    y
}

/// Creates dev.dog with a few records and returns them: the data every attack must leave alone.
fn seed(n: &TestNode) -> BTreeMap<String, Value> {
    create_dog_table(n);
    n.ok(json!({"operation":"insert","database":"dev","table":"dog",
        "records":[{"id":1,"name":"Harper"},{"id":2,"name":"Penny","age":5},{"id":"x","tags":["a",{"b":null}]}]}));
    let before = records(n, "dog");
    assert_eq!(before.len(), 3, "{before:?}");
    before
}

/// The node survived: the process runs, answers operations, still holds `before` exactly, and
/// takes a new write.
fn assert_unharmed(n: &mut TestNode, before: &BTreeMap<String, Value>, what: &str) {
    assert!(n.is_running(), "node died after {what}\n{}", n.log());
    let (status, body) = n.op(json!({"operation":"describe_table","database":"dev","table":"dog"}));
    assert_eq!(status, 200, "after {what}: {body}");
    assert_eq!(&records(n, "dog"), before, "data changed after {what}");
    let probe = format!("probe-{}", before.len());
    n.ok(json!({"operation":"upsert","database":"dev","table":"dog","records":[{"id":probe}]}));
    assert!(has(n, "dog", &probe), "write after {what} not readable");
    n.ok(json!({"operation":"delete","database":"dev","table":"dog","ids":[probe]}));
}

/// A TCP connection to the node's replication port, from `from` when given (replication
/// identity on the plain port is the source address).
fn dial(ip: &str, from: Option<&str>) -> TcpStream {
    let to: SocketAddr = format!("{ip}:9933").parse().unwrap();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(f) = from {
        let src: SocketAddr = format!("{f}:0").parse().unwrap();
        s.bind(&src.into()).unwrap();
    }
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// Opens a replication WebSocket with `headers`; panics when the node refuses the handshake.
fn open(ip: &str, from: Option<&str>, headers: &[(&str, String)]) -> WebSocket<TcpStream> {
    let mut req =
        tungstenite::ClientRequestBuilder::new(format!("ws://{ip}:9933/").parse().unwrap())
            .with_sub_protocol(SUBPROTOCOL);
    for (k, v) in headers {
        req = req.with_header(*k, v.clone());
    }
    match tungstenite::client::client(req, dial(ip, from)) {
        Ok((ws, _)) => ws,
        Err(e) => panic!("handshake refused: {e}"),
    }
}

/// An authenticated node-to-node operation socket (what add_node opens), as a super_user.
fn op_socket(ip: &str) -> WebSocket<TcpStream> {
    open(
        ip,
        None,
        &[
            ("X-Skerry-Kind", "op".into()),
            ("X-Skerry-Node", "hostile".into()),
            ("Authorization", basic(USER, PASS)),
        ],
    )
}

/// A member's replication stream of `db` (the member is the route `from`).
fn pull_socket(ip: &str, from: &str, db: &str) -> WebSocket<TcpStream> {
    open(
        ip,
        Some(from),
        &[
            ("X-Skerry-Kind", "pull".into()),
            ("X-Skerry-Node", from.into()),
            ("X-Skerry-Database", db.into()),
        ],
    )
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// True when the node ends the WebSocket within 10 s (close frame, EOF or reset), reading and
/// discarding whatever else it sends first.
fn node_disconnects(ws: &mut WebSocket<TcpStream>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
            Err(_) => return true,
        }
    }
    false
}

/// True when the node closes a raw TCP connection within `within`.
fn tcp_closed(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return true,
        }
    }
    false
}

/// The first frame the node sends within 10 s.
fn next_frame(ws: &mut WebSocket<TcpStream>) -> Option<Frame> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Binary(b)) => return Frame::decode(&b).ok(),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
            Err(_) => return None,
        }
    }
    None
}

/// A masked client WebSocket frame header for a binary message of `len` bytes (RFC 6455 5.2),
/// written raw so the length can lie.
fn raw_binary_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x82];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len <= 0xffff {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    h.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    h
}

/// Binary messages that are not a frame this node can accept: each must end the socket.
fn garbage_messages() -> Vec<(&'static str, Vec<u8>)> {
    let subscribe = Frame::Subscribe {
        origins: vec![("a".into(), 1)],
        tables: None,
        relay: None,
    }
    .encode();
    // A count that fits the message but items that never come (reserved ~7 GiB at 64 MiB
    // before codec::vec_for).
    let mut hostile_count = vec![PROTOCOL_VERSION, 2, 0x80, 0x80, 0x02];
    hostile_count.resize(hostile_count.len() + 32 * 1024, 0xff);
    vec![
        ("an empty message", vec![]),
        (
            "random bytes",
            (0..200u32).map(|i| (i * 37 + 11) as u8).collect(),
        ),
        ("another protocol version", {
            let mut b = subscribe.clone();
            b[0] = 2;
            b
        }),
        (
            "an unknown frame kind",
            vec![PROTOCOL_VERSION, 0xee, 1, 2, 3],
        ),
        (
            "a truncated frame",
            subscribe[..subscribe.len() - 3].to_vec(),
        ),
        // After the last optional field (`relay`), so nothing can read the byte.
        ("trailing bytes", {
            let mut b = Frame::Subscribe {
                origins: vec![("a".into(), 1)],
                tables: None,
                relay: Some(vec![]),
            }
            .encode();
            b.push(0);
            b
        }),
        ("a huge varint length", {
            let mut b = vec![PROTOCOL_VERSION, 7];
            b.extend_from_slice(&[0xff; 9]);
            b.push(0x01);
            b
        }),
        ("a hostile item count", hostile_count),
        ("an oversized message", vec![0u8; MAX_FRAME + 1]),
    ]
}

#[test]
fn garbage_before_or_during_the_handshake_is_dropped_and_the_node_keeps_serving() {
    let ip = ips(SUITE, 1);
    let mut n = TestNode::start(&ip[0], &node_yaml(&ip[0], &[]));
    let before = seed(&n);
    let attempts: Vec<(&str, Vec<u8>)> = vec![
        ("binary garbage", (0..4096u32).map(|i| (i * 131) as u8).collect()),
        ("a TLS hello on the plain port", vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]),
        (
            "an HTTP request that is not an upgrade",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "an upgrade with a bogus key and version",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 99\r\nSec-WebSocket-Key: !!\r\n\r\n".to_vec(),
        ),
        ("an endless header line", vec![b'A'; 256 * 1024]),
        // Stops mid-request: the handshake deadline (5 s) must end it.
        ("a request cut off mid-headers", b"GET / HTTP/1.1\r\nHost: x\r\nUpg".to_vec()),
    ];
    for (what, bytes) in attempts {
        let mut s = dial(&ip[0], None);
        // The node may close while we are still writing; that is the point.
        let _ = s.write_all(&bytes);
        assert!(
            tcp_closed(&mut s, Duration::from_secs(15)),
            "the node kept a connection open after {what}"
        );
        assert_unharmed(&mut n, &before, what);
    }
    // A valid handshake without credentials or membership is refused, not served.
    let req =
        tungstenite::ClientRequestBuilder::new(format!("ws://{}:9933/", ip[0]).parse().unwrap())
            .with_sub_protocol(SUBPROTOCOL)
            .with_header("X-Skerry-Kind", "pull")
            .with_header("X-Skerry-Node", "intruder")
            .with_header("X-Skerry-Database", "dev");
    match tungstenite::client::client(req, dial(&ip[0], None)) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            assert_eq!(r.status().as_u16(), 401)
        }
        Ok(_) => panic!("an unknown node opened a replication stream"),
        Err(e) => panic!("handshake: {e}"),
    }
    assert_unharmed(&mut n, &before, "a refused handshake");
}

#[test]
fn garbage_frames_on_an_authenticated_op_socket_close_it_without_harm() {
    let ip = ips(SUITE, 1);
    let mut n = TestNode::start(&ip[0], &node_yaml(&ip[0], &[]));
    let before = seed(&n);

    // Control: the socket works, and a bad operation in a good frame is an answer, not a
    // disconnect.
    let mut ws = op_socket(&ip[0]);
    ws.send(Message::Binary(
        Frame::OpRequest {
            json: b"{not json".to_vec(),
        }
        .encode()
        .into(),
    ))
    .unwrap();
    match next_frame(&mut ws) {
        Some(Frame::OpResponse { status, json }) => {
            assert_eq!(status, 400);
            let body: Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(body, json!({"error":"Invalid JSON."}));
        }
        other => panic!("no answer to a bad operation: {other:?}"),
    }

    // Node-to-node operations with hostile fields: answered 400 in Harper's shape before
    // anything is written (certificates and policies are parsed by x509/PEM/serde code that
    // must not panic on garbage either).
    let bad_ops = [
        json!({"operation": 5}),
        json!({"operation": "add_node_back"}),
        json!({"operation": "add_node_back", "hostname": ["h"]}),
        json!({"operation": "add_node_back", "hostname": "h", "ca": "\u{0}\u{ff}"}),
        json!({"operation": "add_node_back", "hostname": "h",
            "csr": "-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"}),
        json!({"operation": "add_node_back", "hostname": "h", "policy": {"sends": 7, "x": [null]}}),
        json!({"operation": "remove_node_back", "name": "someone-else"}),
    ];
    for body in bad_ops {
        let mut ws = op_socket(&ip[0]);
        ws.send(Message::Binary(
            Frame::OpRequest {
                json: body.to_string().into_bytes(),
            }
            .encode()
            .into(),
        ))
        .unwrap();
        match next_frame(&mut ws) {
            Some(Frame::OpResponse { status, json }) => {
                let answer: Value = serde_json::from_slice(&json).unwrap();
                assert_eq!(status, 400, "{body} -> {answer}");
                assert!(
                    answer["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{body} -> {answer}"
                );
            }
            other => panic!("no answer to {body}: {other:?}\n{}", n.log()),
        }
        assert_unharmed(&mut n, &before, &body.to_string());
    }
    let (_, nodes) = n.op(json!({"operation":"cluster_status"}));
    assert!(!nodes.to_string().contains("\"h\""), "{nodes}");

    for (what, bytes) in garbage_messages() {
        let mut ws = op_socket(&ip[0]);
        let _ = ws.send(Message::Binary(bytes.into()));
        assert!(
            node_disconnects(&mut ws),
            "the node kept an op socket open after {what}"
        );
        assert_unharmed(&mut n, &before, what);
    }

    // Below the message layer: WebSocket frame headers that lie about their length, and a
    // frame cut off mid-payload.
    let lies: Vec<(&str, Vec<u8>)> = vec![
        (
            "a frame header claiming 2^62 bytes",
            raw_binary_header(1 << 62),
        ),
        (
            "a frame header with the top length bit set",
            raw_binary_header(u64::MAX),
        ),
        (
            "a frame header just over maxFrameSize",
            raw_binary_header(MAX_FRAME as u64 + 1),
        ),
        (
            "an unmasked client frame",
            vec![0x82, 0x02, PROTOCOL_VERSION, 12],
        ),
        ("a reserved opcode", vec![0x83, 0x80, 0, 0, 0, 0]),
    ];
    for (what, bytes) in lies {
        let mut ws = op_socket(&ip[0]);
        let _ = ws.get_mut().write_all(&bytes);
        assert!(
            node_disconnects(&mut ws),
            "the node kept an op socket open after {what}"
        );
        assert_unharmed(&mut n, &before, what);
    }
    // A frame that announces 1000 bytes and sends 10, then stops: the socket stays with its
    // own thread; the node serves everyone else meanwhile, and ends it when its wait for the
    // operation (30 s) runs out or the peer goes away.
    let mut ws = op_socket(&ip[0]);
    let mut cut = raw_binary_header(1000);
    cut.extend_from_slice(&[0u8; 10]);
    let _ = ws.get_mut().write_all(&cut);
    assert_unharmed(&mut n, &before, "a frame cut off mid-payload");
    drop(ws);
    assert_unharmed(&mut n, &before, "a peer that left mid-frame");
}

#[test]
fn garbage_from_a_member_on_its_replication_stream_ends_that_stream_only() {
    let ip = ips(SUITE, 2);
    let (victim_ip, member_ip) = (&ip[0], &ip[1]);
    // The member is known by its route (accepted by address on the plain port); nothing
    // listens there, so the victim's own dials to it fail and retry, which is fine.
    let mut n = TestNode::start(victim_ip, &node_yaml(victim_ip, &[member_ip.as_str()]));
    let before = seed(&n);
    let subscribe = Frame::Subscribe {
        origins: vec![(victim_ip.clone(), 0)],
        tables: None,
        relay: None,
    }
    .encode();

    for (what, bytes) in garbage_messages() {
        // A valid handshake and subscription first: the stream is live and sends dev's log.
        let mut ws = pull_socket(victim_ip, member_ip, "dev");
        ws.send(Message::Binary(subscribe.clone().into())).unwrap();
        match next_frame(&mut ws) {
            Some(Frame::Txns { txns }) => assert!(!txns.is_empty()),
            other => panic!("the stream sent {other:?} instead of transactions"),
        }
        let _ = ws.send(Message::Binary(bytes.into()));
        assert!(
            node_disconnects(&mut ws),
            "the node kept the stream open after {what}\n{}",
            n.log()
        );
        assert_unharmed(&mut n, &before, what);
    }
    // The stream ended with a clear reason, not a panic.
    let log = n.log();
    assert!(log.contains("malformed data"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    // Valid frames with hostile values: versions at the end of time, origins nobody has, a
    // copy of a table that does not exist from a key that is not a key.
    let mut ws = pull_socket(victim_ip, member_ip, "dev");
    for f in [
        Frame::Subscribe {
            origins: vec![
                (victim_ip.clone(), u64::MAX),
                ("nobody".into(), u64::MAX),
                (String::new(), 0),
            ],
            tables: Some(vec![String::new(), "\u{0}".into(), "dog".into()]),
            relay: Some(vec![String::new(), "nobody".into()]),
        },
        Frame::Ack {
            applied: vec![("nobody".into(), u64::MAX)],
        },
        Frame::CopyRequest {
            table: "no such table".into(),
            key: vec![0xff; 40],
        },
        Frame::CopyRequest {
            table: "dog".into(),
            key: vec![0x00],
        },
        Frame::Txns { txns: vec![] },
        Frame::CopyEnd,
    ] {
        let _ = ws.send(Message::Binary(f.encode().into()));
    }
    drop(ws);
    assert_unharmed(&mut n, &before, "valid frames with hostile values");
    assert!(!n.log().contains("panicked"), "{}", n.log());

    // The stream slot is not stuck: the member subscribes again and gets dev's log.
    let mut ws = pull_socket(victim_ip, member_ip, "dev");
    ws.send(Message::Binary(subscribe.into())).unwrap();
    assert!(
        matches!(next_frame(&mut ws), Some(Frame::Txns { .. })),
        "the member cannot stream after the attacks\n{}",
        n.log()
    );
}

/// Peers speak binary frames only. A text message used to be skipped silently, so a peer could
/// keep an op socket (and its thread) for the whole 30 s operation wait, or a replication
/// stream open forever, with messages that mean nothing.
#[test]
fn a_text_message_on_a_replication_socket_closes_it() {
    let ip = ips(SUITE, 2);
    let (victim_ip, member_ip) = (&ip[0], &ip[1]);
    let mut n = TestNode::start(victim_ip, &node_yaml(victim_ip, &[member_ip.as_str()]));
    let before = seed(&n);

    let mut ws = op_socket(victim_ip);
    ws.send(Message::Text(r#"{"operation":"add_node_back"}"#.into()))
        .unwrap();
    assert!(
        node_disconnects(&mut ws),
        "the node kept an op socket open after a text message"
    );
    assert_unharmed(&mut n, &before, "a text message on an op socket");

    let mut ws = pull_socket(victim_ip, member_ip, "dev");
    ws.send(Message::Binary(
        Frame::Subscribe {
            origins: vec![(victim_ip.clone(), 0)],
            tables: None,
            relay: None,
        }
        .encode()
        .into(),
    ))
    .unwrap();
    assert!(matches!(next_frame(&mut ws), Some(Frame::Txns { .. })));
    ws.send(Message::Text("hello".into())).unwrap();
    assert!(
        node_disconnects(&mut ws),
        "the node kept a replication stream open after a text message"
    );
    assert_unharmed(&mut n, &before, "a text message on a replication stream");
    assert!(
        n.log().contains("text message on a replication socket"),
        "{}",
        n.log()
    );
}

/// The other direction: a member this node dials answers with garbage. It plays a
/// well-behaved member (an empty full copy, then a stream) up to the moment its garbage is
/// due: `Copy` garbage goes to a connection whose first frame asks for a full copy, `Stream`
/// garbage to one that subscribed. One garbage message per connection (the node dials once
/// per replicated database and again after each disconnect); each is recorded as (what,
/// whether the node hung up within 10 s).
#[derive(Default)]
struct Garbage {
    copy: Vec<&'static str>,
    stream: Vec<&'static str>,
    results: Vec<(String, bool)>,
}

/// Garbage to send during a full copy (`copy`) or on a stream, for a connection of `db`.
fn garbage_for(what: &str, db: &str, member: &str) -> Vec<u8> {
    // A table each database's stream may carry, so the check that fails is the one meant.
    let table = if db == "system" { "hdb_user" } else { "dog" };
    let txn = |op: TxnOp| {
        Frame::Txns {
            txns: vec![Txn {
                origin: member.to_string(),
                version: 1,
                db: db.to_string(),
                actor: Actor::None,
                kind: TxnKind::None,
                ops: vec![op],
            }],
        }
        .encode()
    };
    match what {
        // Frames that decode but fail the peer checks (repl::validate) also end the session.
        "a transaction with an undecodable primary key" => txn(TxnOp::Put {
            table: table.into(),
            pk_attr: "id".into(),
            pk: vec![0xff, 0x00, 0x13],
            record: b"{}".to_vec(),
        }),
        "a transaction with an invalid table name" => txn(TxnOp::Delete {
            table: "a/../b".into(),
            pk_attr: "id".into(),
            pk: vec![],
        }),
        "a copied row with an undecodable primary key" => Frame::CopyRows {
            table: table.into(),
            rows: vec![CopyRow {
                pk: vec![0xfe],
                version: 1,
                origin: member.to_string(),
                json: Some(b"{}".to_vec()),
            }],
        }
        .encode(),
        other => garbage_messages()
            .into_iter()
            .find(|(w, _)| *w == other)
            .map(|(_, b)| b)
            .expect("known garbage"),
    }
}

fn hostile_member(ip: &str, state: Arc<Mutex<Garbage>>) {
    let listener = std::net::TcpListener::bind(format!("{ip}:9933")).expect("bind member");
    let name = ip.to_string();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let (name, state) = (name.clone(), state.clone());
            std::thread::spawn(move || serve_garbage(sock, &name, &state));
        }
    });
}

fn send_frame(ws: &mut WebSocket<TcpStream>, f: &Frame) {
    let _ = ws.send(Message::Binary(f.encode().into()));
}

// tungstenite fixes the callback's signature, large error type included.
#[allow(clippy::result_large_err)]
fn serve_garbage(sock: TcpStream, name: &str, state: &Mutex<Garbage>) {
    sock.set_read_timeout(Some(Duration::from_millis(500))).ok();
    let mut db = String::new();
    let callback = |req: &Request, mut resp: Response| {
        db = req
            .headers()
            .get("X-Skerry-Database")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let h = resp.headers_mut();
        h.insert("X-Skerry-Node", name.parse().unwrap());
        h.insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
        Ok(resp)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(sock, callback) else {
        return;
    };
    let mut due = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while due.is_none() {
        let frame = match ws.read() {
            Ok(Message::Binary(b)) => Frame::decode(&b).ok(),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) && Instant::now() < deadline => None,
            Err(_) => return,
        };
        match frame {
            Some(Frame::CopyRequest { .. }) => {
                send_frame(
                    &mut ws,
                    &Frame::CopyStart {
                        vector: vec![],
                        databases: vec![],
                        total: 0,
                    },
                );
                due = state.lock().unwrap().copy.pop();
                if due.is_some() {
                    let table = if db == "system" { "hdb_user" } else { "dog" };
                    send_frame(
                        &mut ws,
                        &Frame::CopyTable {
                            table: table.into(),
                            pk_attr: "id".into(),
                            schema_defined: false,
                            attributes: vec![],
                            expiration: None,
                        },
                    );
                } else {
                    send_frame(&mut ws, &Frame::CopyEnd);
                }
            }
            Some(Frame::Subscribe { .. }) => {
                due = state.lock().unwrap().stream.pop();
                if due.is_none() {
                    // Nothing left to try: an idle, well-behaved stream.
                    loop {
                        match ws.read() {
                            Ok(_) => {}
                            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                            Err(_) => return,
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let Some(what) = due else { return };
    let _ = ws.send(Message::Binary(garbage_for(what, &db, name).into()));
    let hung_up = node_disconnects(&mut ws);
    state
        .lock()
        .unwrap()
        .results
        .push((what.to_string(), hung_up));
}

#[test]
fn garbage_from_a_member_this_node_dials_ends_that_link_only() {
    let ip = ips(SUITE, 2);
    let (victim_ip, member_ip) = (&ip[0], &ip[1]);
    let names: Vec<&'static str> = garbage_messages().into_iter().map(|(w, _)| w).collect();
    let mut g = Garbage::default();
    for (i, w) in names.into_iter().enumerate() {
        // Half of the garbage while copying, half while streaming.
        if i % 2 == 0 {
            g.stream.push(w);
        } else {
            g.copy.push(w);
        }
    }
    g.stream
        .push("a transaction with an undecodable primary key");
    g.stream.push("a transaction with an invalid table name");
    g.copy.push("a copied row with an undecodable primary key");
    let total = g.copy.len() + g.stream.len();
    let state = Arc::new(Mutex::new(g));
    hostile_member(member_ip, state.clone());
    let mut n = TestNode::start(victim_ip, &node_yaml(victim_ip, &[member_ip.as_str()]));
    let before = seed(&n);
    // More databases, more links to the member: the garbage is spread over them, so the
    // reconnect backoff (0.5 s doubling) stays short.
    for db in ["db1", "db2", "db3", "db4"] {
        n.ok(json!({"operation":"create_database","database":db}));
    }
    let all_tried = wait_until(Duration::from_secs(90), || {
        state.lock().unwrap().results.len() >= total
    });
    let results = state.lock().unwrap().results.clone();
    assert!(all_tried, "only {results:?} were tried\n{}", n.log());
    for (what, hung_up) in &results {
        assert!(hung_up, "the node kept the link open after {what}");
    }
    assert_unharmed(&mut n, &before, "garbage from a member it dialled");
    let log = n.log();
    for reason in ["malformed data", "invalid primary key", "Message too long"] {
        assert!(log.contains(reason), "no '{reason}' in\n{log}");
    }
    assert!(!log.contains("panicked"), "{log}");
}

/// add_node_back checked only the PEM markers of the CA it is handed: base64 garbage between
/// them was answered 200, stored in the requester's hdb_nodes row (and replicated to every
/// member) as a CA that trusts nothing. Now it is a 400 and nothing is written.
#[test]
fn a_ca_that_is_not_a_certificate_is_refused_by_add_node_back() {
    let ip = ips(SUITE, 1);
    let mut n = TestNode::start(&ip[0], &node_yaml(&ip[0], &[]));
    let before = seed(&n);
    let mut ws = op_socket(&ip[0]);
    let body = json!({"operation": "add_node_back", "hostname": "h",
        "ca": "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"});
    ws.send(Message::Binary(
        Frame::OpRequest {
            json: body.to_string().into_bytes(),
        }
        .encode()
        .into(),
    ))
    .unwrap();
    match next_frame(&mut ws) {
        Some(Frame::OpResponse { status, json }) => {
            let answer: Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(status, 400, "{answer}");
            let msg = answer["error"].as_str().unwrap_or_default();
            assert!(msg.starts_with("'ca' is not a certificate: "), "{answer}");
        }
        other => panic!("no answer: {other:?}"),
    }
    let (_, rows) = n.op(json!({"operation":"search_by_value","database":"system",
        "table":"hdb_nodes","attribute":"name","value":"*","get_attributes":["name"]}));
    assert!(!rows.to_string().contains("\"h\""), "{rows}");
    assert_unharmed(&mut n, &before, "a CA that is not a certificate");
}
