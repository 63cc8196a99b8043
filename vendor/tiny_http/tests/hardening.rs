//! Regression tests for the remote-crash and denial-of-service fixes of this vendored copy
//! (see VENDORED.md). Real sockets on 127.0.0.1; waits are bounded by deadlines, never sleeps.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tiny_http::{ConnectionOptions, Request, Response, Server};

/// Upper bound for anything that should happen "promptly".
const PROMPT: Duration = Duration::from_secs(10);

fn start_server() -> (Arc<Server>, SocketAddr) {
    let server = Server::http("127.0.0.1:0").unwrap();
    let addr = server.server_addr().to_ip().unwrap();
    (Arc::new(server), addr)
}

fn start_server_with(opts: ConnectionOptions) -> (Arc<Server>, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (
        Arc::new(Server::from_listener_with(listener, opts).unwrap()),
        addr,
    )
}

fn with_read_timeout(timeout: Duration) -> ConnectionOptions {
    ConnectionOptions {
        read_timeout: Some(timeout),
        ..ConnectionOptions::default()
    }
}

/// Answers every request on `threads` handler threads without reading any body:
/// 413 if the declared body is over 1 MiB, else 200 with the URL as body.
fn serve(server: &Arc<Server>, threads: usize) {
    for _ in 0..threads {
        let server = Arc::clone(server);
        thread::spawn(move || {
            for rq in server.incoming_requests() {
                answer(rq);
            }
        });
    }
}

fn answer(rq: Request) {
    let status = match rq.body_length() {
        Some(len) if len > 1024 * 1024 => 413,
        _ => 200,
    };
    let body = rq.url().to_string();
    let _ = rq.respond(Response::from_string(body).with_status_code(status));
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PROMPT)).unwrap();
    stream.set_write_timeout(Some(PROMPT)).unwrap();
    stream
}

/// Reads one response; returns its status code and body (`None` if the connection closed
/// or failed before a complete response).
fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).ok()?;
    Some((status, String::from_utf8(body).unwrap()))
}

/// One GET on a new connection; returns the status code.
fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = connect(addr);
    write!(stream, "GET {} HTTP/1.1\r\nHost: x\r\n\r\n", path).ok()?;
    read_response(&mut stream).map(|(status, _)| status)
}

/// True if the server closes `stream` (EOF or reset) before `within` has passed.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    read_until_closed(stream, within).is_some()
}

/// Reads until the server closes `stream` (EOF or reset); returns what was received, or
/// `None` if it is still open after `within`.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    let mut received = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(received),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                return None
            }
            Err(_) => return Some(received), // reset
        }
    }
}

// Bug 1: an unread body was drained with `vec![0; Content-Length]` when the request was dropped.
// 100 GB aborted the whole process, usize::MAX panicked the handler thread.
#[test]
fn huge_content_length_answered_without_reading_body() {
    let (server, addr) = start_server();
    serve(&server, 1); // one handler thread: a panic in it would leave the next request unanswered
    for len in ["100000000000", &usize::MAX.to_string()] {
        let mut stream = connect(addr);
        write!(
            stream,
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            len
        )
        .unwrap();
        assert_eq!(read_response(&mut stream).unwrap().0, 413, "length {}", len);
        // the rest of the body is not read: the connection is closed instead
        assert!(closed_within(&mut stream, PROMPT), "length {}", len);
        assert_eq!(get(addr, "/next"), Some(200), "after length {}", len);
    }
}

// Bug 1: a client declaring 4 GB and never sending it blocked the handler thread (which
// drained the body when dropping the request) until the client went away.
#[test]
fn never_sent_body_does_not_block_handler_thread() {
    let (server, addr) = start_server();
    serve(&server, 1);
    let mut stalled = connect(addr);
    write!(
        stalled,
        "PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: 4294967296\r\n\r\n"
    )
    .unwrap();
    assert_eq!(read_response(&mut stalled).unwrap().0, 413);
    // the only handler thread must be free for another client
    assert_eq!(get(addr, "/other"), Some(200));
    assert!(closed_within(&mut stalled, PROMPT));
}

// A small unread body is still skipped so that keep-alive keeps working, and a body whose
// length is unknown (chunked) or unparsable is never parsed as the next request.
#[test]
fn unread_bodies_keep_alive_or_close() {
    let (server, addr) = start_server();
    serve(&server, 1);

    let mut stream = connect(addr);
    let body = "x".repeat(10_000);
    write!(
        stream,
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        body
    )
    .unwrap();
    assert_eq!(read_response(&mut stream).unwrap(), (200, "/a".into()));
    write!(stream, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut stream).unwrap(), (200, "/b".into()));

    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut stream = connect(addr);
    write!(
        stream,
        "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n",
        smuggled.len(),
        smuggled
    )
    .unwrap();
    assert_eq!(read_response(&mut stream).unwrap(), (200, "/c".into()));
    assert!(
        closed_within(&mut stream, PROMPT),
        "chunked body parsed as a request"
    );

    let mut stream = connect(addr);
    write!(
        stream,
        "POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n{}",
        smuggled
    )
    .unwrap();
    assert_eq!(read_response(&mut stream).unwrap().0, 400);
    assert!(closed_within(&mut stream, PROMPT));
}

// Bug 2: in a burst of new keep-alive connections, the task pool queued connections behind
// threads that were busy with other keep-alive connections; they were not answered until
// another connection closed.
#[test]
fn burst_of_keep_alive_connections_all_answered() {
    let mut open = Vec::new(); // all connections stay open (keep-alive) until the end
    for round in 0..3 {
        // the connections wait in the backlog, so that the server accepts them in one burst
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut streams: Vec<TcpStream> = (0..32).map(|_| connect(addr)).collect();
        let server = Arc::new(Server::from_listener(listener, None).unwrap());
        serve(&server, 2);
        for stream in &mut streams {
            write!(stream, "GET /ka HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        }
        for (i, stream) in streams.iter_mut().enumerate() {
            let response = read_response(stream);
            assert_eq!(
                response.map(|r| r.0),
                Some(200),
                "round {} conn {}",
                round,
                i
            );
        }
        open.extend(streams);
    }
}

// Bug 3: without timeouts an idle keep-alive connection held its thread forever.
#[test]
fn idle_connection_closed_after_read_timeout() {
    let timeout = Duration::from_millis(500);
    let (server, addr) = start_server_with(with_read_timeout(timeout));
    serve(&server, 1);

    let mut never_sent = connect(addr);
    let mut kept_alive = connect(addr);
    write!(kept_alive, "GET /once HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut kept_alive).unwrap().0, 200);
    let idle_since = Instant::now();
    for stream in [&mut never_sent, &mut kept_alive] {
        // closed silently (no 408 a client could take for the answer to its next request)
        assert_eq!(read_until_closed(stream, PROMPT), Some(Vec::new()));
    }
    assert!(idle_since.elapsed() >= timeout - Duration::from_millis(50));
}

// Bug 3: a per-read timeout restarts with each byte, so a client sending its headers one
// byte at a time (slowloris) kept the connection (and its thread) forever.
#[test]
fn slowloris_closed_after_read_timeout() {
    let timeout = Duration::from_millis(1000);
    let (server, addr) = start_server_with(with_read_timeout(timeout));
    serve(&server, 1);

    let mut stream = connect(addr);
    let mut trickle = stream.try_clone().unwrap();
    let started = Instant::now();
    thread::spawn(move || {
        trickle.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        // pacing, not synchronisation: one byte of an endless header every 100 ms
        while started.elapsed() < 2 * PROMPT && trickle.write_all(b"X").is_ok() {
            thread::sleep(Duration::from_millis(100));
        }
    });
    let received = read_until_closed(&mut stream, PROMPT).expect("slowloris not closed");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout - Duration::from_millis(50),
        "{:?}",
        elapsed
    );
    assert!(elapsed < timeout * 3, "closed after {:?}", elapsed);
    assert!(received.starts_with(b"HTTP/1.1 408"), "{:?}", received);
    // the server still works
    assert_eq!(get(addr, "/after"), Some(200));
}

// A client that does not read its response no longer blocks the handler forever.
#[test]
fn non_reading_client_fails_after_write_timeout() {
    let opts = ConnectionOptions {
        write_timeout: Some(Duration::from_millis(500)),
        ..ConnectionOptions::default()
    };
    let (server, addr) = start_server_with(opts);
    let mut stream = connect(addr);
    write!(stream, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let rq = server.recv_timeout(PROMPT).unwrap().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let response = Response::from_data(vec![b'x'; 64 * 1024 * 1024]);
        tx.send(rq.respond(response)).unwrap();
    });
    let result = rx.recv_timeout(PROMPT).expect("respond still blocked");
    assert!(result.is_err());
    drop(stream);
}

/// Polls `cond` until it holds or `within` has passed.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5)); // polling interval
    }
}

// Bug 3: upstream accepted every connection and gave each a thread; bug 6:
// `num_connections()` was `unimplemented!()`.
#[test]
fn max_connections_bounds_live_connections() {
    let max = 4;
    let opts = ConnectionOptions {
        max_connections: max,
        ..ConnectionOptions::default()
    };
    let (server, addr) = start_server_with(opts);
    serve(&server, 1);
    assert_eq!(server.num_connections(), 0);

    let mut streams: Vec<TcpStream> = (0..12).map(|_| connect(addr)).collect();
    for stream in &mut streams {
        write!(stream, "GET /limited HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    }
    // the first `max` connections are accepted and answered...
    for stream in &mut streams[..max] {
        assert_eq!(read_response(stream).unwrap().0, 200);
    }
    assert_eq!(server.num_connections(), max);
    // ...the others wait in the backlog, unanswered, without a thread
    streams[max]
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8];
    let waiting = streams[max].read(&mut byte);
    assert!(
        matches!(&waiting, Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut),
        "{:?}",
        waiting
    );
    assert_eq!(server.num_connections(), max);

    // each connection that ends lets one more in
    let rest = streams.split_off(max);
    drop(streams);
    for mut stream in rest {
        stream.set_read_timeout(Some(PROMPT)).unwrap();
        assert_eq!(read_response(&mut stream).unwrap().0, 200);
        assert!(server.num_connections() <= max);
    }
    assert!(eventually(PROMPT, || server.num_connections() == 0));
}

/// Runs the test `name` of this test binary alone in a child process whose open-files
/// limit is `nofile` (set with the shell's `ulimit -n`), and fails if the child fails.
fn run_in_child_with_nofile(name: &str, nofile: u32) {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "ulimit -n {} && exec \"$0\" --exact {} --test-threads=1 --nocapture",
        nofile, name
    );
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(exe)
        .env("TINY_HTTP_TEST_CHILD", name)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + 6 * PROMPT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            panic!("child test did not finish");
        }
        thread::sleep(Duration::from_millis(20)); // polling interval
    };
    assert!(status.success(), "child test failed: {}", status);
}

/// Opens /dev/null until the process is out of file descriptors.
fn exhaust_file_descriptors() -> Vec<std::fs::File> {
    let mut files = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(file) => files.push(file),
            Err(e) if e.raw_os_error() == Some(24) => return files, // EMFILE
            Err(e) => panic!("{}", e),
        }
    }
}

/// Collects the messages logged at error level (by the accept loop).
struct ErrorLog(std::sync::Mutex<Vec<String>>);

impl log::Log for ErrorLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Error
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.0.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

static ERROR_LOG: ErrorLog = ErrorLog(std::sync::Mutex::new(Vec::new()));

fn logged_errors() -> usize {
    ERROR_LOG.0.lock().unwrap().len()
}

// Bug 5: upstream stopped accepting for good on the first accept error (EMFILE under a
// connection flood), and its accept thread panicked when `try_clone` of a new connection
// hit EMFILE. The server runs in a child process with a low RLIMIT_NOFILE, where the test
// uses up all descriptors on purpose. (Linux reserves the descriptor of a blocked
// `accept` before a client arrives, so the first EMFILE comes from `try_clone`.)
#[test]
fn accept_survives_running_out_of_file_descriptors() {
    const NAME: &str = "accept_survives_running_out_of_file_descriptors";
    if std::env::var("TINY_HTTP_TEST_CHILD").as_deref() != Ok(NAME) {
        return run_in_child_with_nofile(NAME, 64);
    }
    log::set_logger(&ERROR_LOG).unwrap();
    log::set_max_level(log::LevelFilter::Error);
    let (server, addr) = start_server();
    serve(&server, 1);
    assert_eq!(get(addr, "/before"), Some(200));
    // the server must have closed that connection's descriptors before they are counted
    assert!(eventually(PROMPT, || server.num_connections() == 0));

    let mut spare = exhaust_file_descriptors();
    // one descriptor for the client; the blocked `accept` has its own, none is left for
    // `try_clone`: the connection is closed, the accept loop goes on
    drop(spare.pop());
    let mut first = connect(addr);
    assert!(closed_within(&mut first, PROMPT));
    assert!(eventually(PROMPT, || logged_errors() == 1));

    // two descriptors: one for the client, one for `try_clone`; then the next `accept`
    // fails with EMFILE (and is retried)
    drop(spare.pop());
    drop(spare.pop());
    let mut second = connect(addr);
    write!(second, "GET /second HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut second).unwrap().0, 200);
    assert!(eventually(PROMPT, || logged_errors() == 2));

    // descriptors are available again: the server accepts and serves as before
    drop(spare);
    assert_eq!(get(addr, "/after"), Some(200));
    assert!(eventually(PROMPT, || server.num_connections() == 1)); // `second`
    drop((first, second));
}

// Bug 4: a header line was buffered without limit: a 200 MiB line without CRLF took
// 200 MiB of memory. Now reading stops after 16 KiB, the client gets a 431 and the
// connection is closed; the client cannot push much more than the socket buffers hold.
#[test]
fn endless_header_line_rejected_after_16_kib() {
    let (server, addr) = start_server();
    serve(&server, 1);
    let mut stream = connect(addr);
    let mut writer = stream.try_clone().unwrap();
    let total = 256 * 1024 * 1024; // never sent in full: the server stops reading
    let sent = thread::spawn(move || {
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0;
        writer.write_all(b"GET / HTTP/1.1\r\nX-Long: ").unwrap();
        while sent < total {
            match writer.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break, // reset by the server, or blocked for PROMPT
            }
        }
        sent
    });
    let received = read_until_closed(&mut stream, PROMPT).expect("connection not closed");
    // the 431 may be lost when the server's close resets the connection
    assert!(
        received.is_empty() || received.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    let sent = sent.join().unwrap();
    assert!(
        sent < 64 * 1024 * 1024,
        "server read {} bytes of header",
        sent
    );
    assert_eq!(get(addr, "/after"), Some(200));
}

#[test]
fn long_request_line_and_too_many_headers_rejected() {
    let (server, addr) = start_server();
    serve(&server, 1);

    let mut stream = connect(addr);
    let path = "/".to_string() + &"p".repeat(20 * 1024);
    write!(stream, "GET {} HTTP/1.1\r\nHost: x\r\n\r\n", path).unwrap();
    assert_eq!(read_response(&mut stream).unwrap().0, 431);
    assert!(closed_within(&mut stream, PROMPT));

    let headers = |n: usize| {
        (0..n)
            .map(|i| format!("X-H{}: v\r\n", i))
            .collect::<String>()
    };
    let mut stream = connect(addr);
    write!(stream, "GET /many HTTP/1.1\r\n{}\r\n", headers(129)).unwrap();
    assert_eq!(read_response(&mut stream).unwrap().0, 431);
    assert!(closed_within(&mut stream, PROMPT));

    // at the limits: a 16 KiB header line and 128 headers are fine
    let mut stream = connect(addr);
    let long = "v".repeat(16 * 1024 - 10);
    write!(stream, "GET /ok HTTP/1.1\r\nX-Long: {}\r\n\r\n", long).unwrap();
    assert_eq!(read_response(&mut stream).unwrap(), (200, "/ok".into()));
    write!(stream, "GET /ok2 HTTP/1.1\r\n{}\r\n", headers(128)).unwrap();
    assert_eq!(read_response(&mut stream).unwrap(), (200, "/ok2".into()));
}

// A client pipelining requests without reading the responses made upstream read and
// queue every request it sent (memory grew without limit). At most 16 requests of a
// connection now wait for their response.
#[test]
fn pipelined_requests_bounded_until_answered() {
    const SENT: usize = 1000;
    let (server, addr) = start_server();
    let mut stream = connect(addr);
    let mut writer = stream.try_clone().unwrap();
    thread::spawn(move || {
        let requests = "GET /p HTTP/1.1\r\nHost: x\r\n\r\n".repeat(SENT);
        writer.write_all(requests.as_bytes()).unwrap();
    });
    let mut held = Vec::new();
    while held.len() < 16 {
        held.push(
            server
                .recv_timeout(PROMPT)
                .unwrap()
                .expect("request not queued"),
        );
    }
    // none is answered: no further request of this connection is read
    if let Some(extra) = server.recv_timeout(Duration::from_millis(300)).unwrap() {
        drop(held); // first: dropping `extra` waits for the responses before it
        drop(extra);
        panic!("more than 16 unanswered requests queued");
    }

    let mut answered = 0;
    for rq in held {
        answer(rq);
        answered += 1;
    }
    let reader = thread::spawn(move || {
        (0..SENT)
            .map(|_| read_response(&mut stream).map(|r| r.0))
            .filter(|status| *status == Some(200))
            .count()
    });
    while answered < SENT {
        answer(server.recv_timeout(PROMPT).unwrap().expect("request lost"));
        answered += 1;
    }
    assert_eq!(reader.join().unwrap(), SENT);
}

// Change 8: one client address could take every connection slot (`max_connections`), so a
// flood of idle or slow sockets from one host starved every other client.
#[test]
fn one_address_cannot_take_every_connection() {
    let opts = ConnectionOptions {
        max_connections: 8,
        max_connections_per_ip: 2,
        ..ConnectionOptions::default()
    };
    let (server, addr) = start_server_with(opts);
    serve(&server, 1);
    let from = |ip: &str| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&format!("{ip}:0").parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.connect(&addr.into()).unwrap();
        let s: TcpStream = s.into();
        s.set_read_timeout(Some(PROMPT)).unwrap();
        s
    };
    let _held: Vec<TcpStream> = (0..2).map(|_| from("127.0.0.1")).collect();
    // A third from the same address is closed without an answer...
    let mut third = from("127.0.0.1");
    assert!(closed_within(&mut third, PROMPT));
    // ...while another address is served.
    let mut other = from("127.0.0.2");
    write!(other, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut other).map(|r| r.0), Some(200));
}

// Change 9: a body read by the handler (not eagerly) had only a per-read timeout, so a client
// trickling one byte at a time held the connection for as long as it liked.
#[test]
fn a_trickled_body_is_cut_off_by_one_deadline() {
    let timeout = Duration::from_millis(1000);
    let (server, addr) = start_server_with(ConnectionOptions {
        read_timeout: Some(timeout),
        eager_body_limit: 0,
        ..ConnectionOptions::default()
    });
    let server2 = Arc::clone(&server);
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut rq = server2.recv().unwrap();
        let mut body = Vec::new();
        let r = rq.as_reader().read_to_end(&mut body);
        tx.send(r.is_err()).unwrap();
    });
    let mut stream = connect(addr);
    write!(stream, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n").unwrap();
    let started = Instant::now();
    let mut trickle = stream.try_clone().unwrap();
    thread::spawn(move || {
        // pacing, not synchronisation: one byte every 200 ms, each well within the timeout
        while started.elapsed() < 2 * PROMPT && trickle.write_all(b"x").is_ok() {
            thread::sleep(Duration::from_millis(200));
        }
    });
    let failed = rx.recv_timeout(PROMPT).expect("the body read never ended");
    assert!(failed, "the trickled body was read to the end");
    assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());
}
