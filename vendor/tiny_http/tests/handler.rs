//! `Server::from_listener_with_handler`: requests are answered on their connection's thread.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn handler_answers_keep_alive_requests_on_the_connection_thread() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let handler: tiny_http::RequestHandler = Arc::new(move |mut rq: tiny_http::Request| {
        let mut body = String::new();
        rq.as_reader().read_to_string(&mut body).unwrap();
        counter.fetch_add(1, Ordering::SeqCst);
        let name = std::thread::current().name().map(str::to_string);
        // The handler runs on the connection's pool thread, never on the caller's.
        assert_ne!(name.as_deref(), Some("main"));
        rq.respond(tiny_http::Response::from_string(format!("echo:{body}")))
            .unwrap();
    });
    let opts = tiny_http::ConnectionOptions {
        read_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let server = tiny_http::Server::from_listener_with_handler(listener, opts, handler).unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..3 {
        let body = format!("m{i}");
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut buf = [0u8; 1024];
        let mut got = String::new();
        while !got.ends_with(&format!("echo:{body}")) {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed early: {got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert_eq!(served.load(Ordering::SeqCst), 3);
    // In handler mode nothing is queued for recv().
    assert!(server
        .recv_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());
}
