//! A scripted replication peer for security tests: it listens on a loopback address like a
//! node, speaks Skerry's wire protocol (`skerry::repl::wire`), announces whatever name the
//! test gives it, and answers as the script says (a forged stream, a refusal, ...). It records
//! what the node under test sent it, so tests can wait on "the node subscribed" and so on.

#![allow(dead_code)]

use serde_json::Value;
use skerry::core::txn::Txn;
use skerry::repl::wire::Frame;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::{Message, WebSocket};

/// What the fake answers to a node that dials it.
#[derive(Clone, Default)]
pub struct Script {
    /// The node name announced in the handshake answer.
    pub name: String,
    /// Sent once after the first `Subscribe` of the `system` stream.
    pub system_txns: Vec<Txn>,
    /// Answer to an `op` socket (`add_node_back`): status and body.
    pub op_answer: Option<(u16, Value)>,
}

#[derive(Default)]
pub struct Seen {
    /// (database header, frame kind) of everything received on stream sockets.
    pub frames: Vec<(String, String)>,
    pub handshakes: usize,
}

pub struct FakePeer {
    pub ip: String,
    pub seen: Arc<Mutex<Seen>>,
}

impl FakePeer {
    /// Listens on `ip:9933` and serves every connection with `script`, until the test ends.
    pub fn start(ip: &str, script: Script) -> FakePeer {
        let listener = TcpListener::bind(format!("{ip}:9933")).expect("bind fake peer");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let script = script.clone();
                let seen = s2.clone();
                std::thread::spawn(move || serve(sock, &script, &seen));
            }
        });
        FakePeer {
            ip: ip.to_string(),
            seen,
        }
    }

    pub fn subscribes(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .frames
            .iter()
            .filter(|(_, k)| k == "Subscribe" || k == "CopyRequest")
            .count()
    }
}

fn kind(f: &Frame) -> &'static str {
    match f {
        Frame::Subscribe { .. } => "Subscribe",
        Frame::CopyRequest { .. } => "CopyRequest",
        Frame::Ack { .. } => "Ack",
        Frame::OpRequest { .. } => "OpRequest",
        _ => "other",
    }
}

// tungstenite fixes the callback's signature, large error type included.
#[allow(clippy::result_large_err)]
fn serve(sock: TcpStream, script: &Script, seen: &Mutex<Seen>) {
    sock.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut db = String::new();
    let mut kind_hdr = String::new();
    let name = script.name.clone();
    let callback = |req: &Request, mut resp: Response| {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        db = h("X-Skerry-Database");
        kind_hdr = h("X-Skerry-Kind");
        let headers = resp.headers_mut();
        headers.insert("X-Skerry-Node", name.parse().unwrap());
        headers.insert(
            "Sec-WebSocket-Protocol",
            skerry::repl::wire::SUBPROTOCOL.parse().unwrap(),
        );
        Ok(resp)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(sock, callback) else {
        return;
    };
    seen.lock().unwrap().handshakes += 1;
    let mut sent_txns = false;
    loop {
        let msg = match ws.read() {
            Ok(m) => m,
            Err(_) => return,
        };
        let Message::Binary(b) = msg else { continue };
        let Ok(frame) = Frame::decode(&b) else {
            return;
        };
        seen.lock()
            .unwrap()
            .frames
            .push((db.clone(), kind(&frame).to_string()));
        match frame {
            Frame::OpRequest { .. } if kind_hdr == "op" => {
                let (status, body) = script
                    .op_answer
                    .clone()
                    .unwrap_or((200, serde_json::json!({"message": "ok"})));
                send(
                    &mut ws,
                    &Frame::OpResponse {
                        status,
                        json: body.to_string().into_bytes(),
                    },
                );
            }
            Frame::CopyRequest { .. } => {
                send(
                    &mut ws,
                    &Frame::CopyStart {
                        vector: Vec::new(),
                        databases: Vec::new(),
                        total: 0,
                    },
                );
                send(&mut ws, &Frame::CopyEnd);
            }
            Frame::Subscribe { .. } if db == "system" && !sent_txns => {
                sent_txns = true;
                send(
                    &mut ws,
                    &Frame::Txns {
                        txns: script.system_txns.clone(),
                    },
                );
            }
            _ => {}
        }
    }
}

fn send(ws: &mut WebSocket<TcpStream>, f: &Frame) {
    let _ = ws.send(Message::Binary(f.encode().into()));
}
