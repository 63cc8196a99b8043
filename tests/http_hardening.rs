//! Regression tests against the skerry binary for the HTTP-layer bugs of upstream tiny_http 0.12
//! (shared/research/stack.md §5): huge declared bodies, stalled and slow clients, idle
//! keep-alive connections, slowloris heads, giant header lines, connection bursts, the
//! connection cap and accept errors. Each test checks that the process stays up, keeps
//! answering other clients, and keeps its memory and thread count bounded.

mod common;
use common::*;
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const SUITE: u8 = 16;

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(5))
        .expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response (head, then a Content-Length body) from a keep-alive connection.
fn read_response(s: &mut TcpStream) -> std::io::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        buf.push(byte[0]);
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("response head too long"));
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    s.read_exact(&mut body)?;
    Ok((status, body))
}

fn op_request(addr: &str, body: &str, keep_alive: bool) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: {}\r\nContent-Length: {}\r\n{}\r\n{body}",
        basic(USER, PASS),
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" }
    )
    .into_bytes()
}

fn health_ok(n: &TestNode, timeout: Duration) -> bool {
    http_raw(
        &n.addr(),
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        timeout,
    )
    .is_ok_and(|(s, _)| s == 200)
}

/// A normal operation by another client, answered within `within`.
fn answered_within(n: &TestNode, within: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let req = op_request(&n.addr(), r#"{"operation":"describe_all"}"#, false);
    match http_raw(&n.addr(), &req, within) {
        Ok((200, _)) => Ok(start.elapsed()),
        Ok((s, b)) => Err(format!("status {s}: {}", String::from_utf8_lossy(&b))),
        Err(e) => Err(format!("no answer within {within:?}: {e}")),
    }
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} not in /proc/{pid}/status"))
}

/// True once the peer has closed the connection (EOF, reset, or a final 408/4xx head
/// followed by EOF). Reads with a short timeout so it can be polled.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. a 408 response before the close
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn declared_content_length_of_100_gb_or_u64_max_gets_413_and_the_process_stays_up() {
    let mut n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    for declared in ["100000000000", "18446744073709551615", "4294967296"] {
        let mut s = connect(&n.addr());
        let req = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: {}\r\nContent-Length: {declared}\r\n\r\n",
            basic(USER, PASS)
        );
        s.write_all(req.as_bytes()).unwrap();
        let (status, body) =
            read_response(&mut s).unwrap_or_else(|e| panic!("Content-Length {declared}: {e}"));
        assert_eq!(
            status,
            413,
            "Content-Length {declared}: {}",
            String::from_utf8_lossy(&body)
        );
        let err: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert!(
            err["error"].is_string(),
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            n.is_running(),
            "the process died after Content-Length {declared}:\n{}",
            n.log()
        );
        assert!(
            health_ok(&n, Duration::from_secs(5)),
            "no answer after Content-Length {declared}"
        );
    }
    // A length that does not even fit in 64 bits is refused, not a crash.
    let mut s = connect(&n.addr());
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n")
        .unwrap();
    let status = read_response(&mut s).map(|r| r.0).unwrap_or(0);
    assert!(
        status == 0 || (400..500).contains(&status),
        "status {status}"
    );
    assert!(n.is_running(), "{}", n.log());
    let r = n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1}]}));
    assert_eq!(r["inserted_hashes"], json!([1]));
}

#[test]
fn clients_declaring_4_gb_and_sending_nothing_do_not_block_others() {
    let mut n = TestNode::start(&ips(SUITE, 1)[0], "");
    // More stalled clients than worker threads (16 by default).
    let mut stalled: Vec<TcpStream> = (0..24)
        .map(|_| {
            let mut s = connect(&n.addr());
            let req = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: {}\r\nContent-Length: 4294967296\r\n\r\n",
                basic(USER, PASS)
            );
            s.write_all(req.as_bytes()).unwrap();
            s
        })
        .collect();
    let took = answered_within(&n, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("answered in {took:?} beside 24 stalled clients");
    for s in &mut stalled {
        let status = read_response(s).map(|r| r.0).unwrap_or(0);
        assert_eq!(status, 413);
    }
    assert!(n.is_running());
}

/// Bodies under the limit that never arrive: a worker thread waits for each one until the read
/// timeout (30 s by default), so a handful of silent clients must not stall everyone else.
#[test]
fn silent_bodies_under_the_limit_do_not_block_other_clients() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    let _stalled: Vec<TcpStream> = (0..24)
        .map(|_| {
            let mut s = connect(&n.addr());
            let req = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: {}\r\nContent-Length: 5000000\r\n\r\n{{",
                basic(USER, PASS)
            );
            s.write_all(req.as_bytes()).unwrap();
            s
        })
        .collect();
    // Several requests in a row: the first may slip in before the stalled requests reach the
    // workers, the later ones queue behind them.
    for i in 0..3 {
        if let Err(e) = answered_within(&n, Duration::from_secs(5)) {
            panic!("request {i}: 24 clients that declared a 5 MB body and sent 1 byte stall the node: {e}");
        }
    }
}

/// Slow-body clients: each byte arrives well within the read timeout, so only a deadline for
/// the whole request (or reading bodies off the worker pool) keeps them from pinning every
/// worker for as long as they like.
#[test]
fn slow_body_senders_do_not_starve_other_clients() {
    let n = TestNode::start_with_env(
        &ips(SUITE, 1)[0],
        "",
        &[
            ("OPERATIONSAPI_NETWORK_TIMEOUT", "1s"),
            ("OPERATIONSAPI_NETWORK_KEEPALIVETIMEOUT", "1s"),
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..24)
        .map(|_| {
            let addr = n.addr();
            let stop = stop.clone();
            let started = started.clone();
            std::thread::spawn(move || {
                let mut s = connect(&addr);
                let req = format!(
                    "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: {}\r\nContent-Length: 5000\r\n\r\n",
                    basic(USER, PASS)
                );
                s.write_all(req.as_bytes()).unwrap();
                started.fetch_add(1, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    if s.write_all(b" ").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || started
        .load(Ordering::SeqCst)
        == 24));
    // The slow requests' heads are in; normal requests now queue behind them (the first may
    // slip in before the slow ones reach the workers).
    let result = (0..3).try_for_each(|i| {
        answered_within(&n, Duration::from_secs(5))
            .map(|_| ())
            .map_err(|e| format!("request {i}: {e}"))
    });
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    if let Err(e) = result {
        panic!("24 clients trickling a body byte every 300 ms starve the node: {e}");
    }
}

#[test]
fn a_burst_of_40_simultaneous_keep_alive_connections_is_answered() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    let barrier = Arc::new(Barrier::new(40));
    let threads: Vec<_> = (0..40)
        .map(|i| {
            let addr = n.addr();
            let barrier = barrier.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut s = connect(&addr);
                barrier.wait();
                let ins = format!(
                    r#"{{"operation":"insert","database":"dev","table":"dog","records":[{{"id":{i}}}]}}"#
                );
                s.write_all(&op_request(&addr, &ins, true)).map_err(|e| e.to_string())?;
                let (st, b) = read_response(&mut s).map_err(|e| format!("conn {i}: {e}"))?;
                if st != 200 {
                    return Err(format!("conn {i}: {st} {}", String::from_utf8_lossy(&b)));
                }
                // The same connection serves a second request.
                let read = format!(
                    r#"{{"operation":"search_by_id","database":"dev","table":"dog","ids":[{i}],"get_attributes":["id"]}}"#
                );
                s.write_all(&op_request(&addr, &read, true)).map_err(|e| e.to_string())?;
                let (st, b) = read_response(&mut s).map_err(|e| format!("conn {i} second request: {e}"))?;
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
                if st != 200 || v != json!([{ "id": i }]) {
                    return Err(format!("conn {i} second request: {st} {v}"));
                }
                Ok(())
            })
        })
        .collect();
    let errors: Vec<String> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap().err())
        .collect();
    assert!(
        errors.is_empty(),
        "{} of 40 connections failed:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn idle_connections_are_closed_after_the_timeout_and_accept_keeps_working() {
    let n = TestNode::start_with_env(
        &ips(SUITE, 1)[0],
        "",
        &[
            ("OPERATIONSAPI_NETWORK_TIMEOUT", "1s"),
            ("OPERATIONSAPI_NETWORK_KEEPALIVETIMEOUT", "1s"),
        ],
    );
    // Connected, never sent a byte.
    let mut silent = connect(&n.addr());
    // One request, then idle on a keep-alive connection.
    let mut kept = connect(&n.addr());
    kept.write_all(&op_request(
        &n.addr(),
        r#"{"operation":"describe_all"}"#,
        true,
    ))
    .unwrap();
    assert_eq!(read_response(&mut kept).unwrap().0, 200);
    let start = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || closed_by_peer(&mut silent)),
        "a silent connection is still open after {:?}",
        start.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(5), || closed_by_peer(&mut kept)),
        "an idle keep-alive connection is still open after {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "closed too early: {:?}",
        start.elapsed()
    );
    answered_within(&n, Duration::from_secs(5)).unwrap();
}

fn trickle_until_cut(addr: &str, give_up: Duration) -> Option<Duration> {
    let mut s = connect(addr);
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: ";
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < give_up {
        let b = if i < head.len() { head[i] } else { b'a' };
        i += 1;
        if s.write_all(&[b]).is_err() || closed_by_peer(&mut s) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    None
}

#[test]
fn slowloris_client_trickling_header_bytes_is_cut_off() {
    let n = TestNode::start_with_env(
        &ips(SUITE, 1)[0],
        "",
        &[
            ("OPERATIONSAPI_NETWORK_TIMEOUT", "1s"),
            ("OPERATIONSAPI_NETWORK_KEEPALIVETIMEOUT", "1s"),
        ],
    );
    let cut = trickle_until_cut(&n.addr(), Duration::from_secs(8));
    assert!(
        cut.is_some_and(|d| d < Duration::from_secs(5)),
        "slowloris head still open after {cut:?}"
    );
    answered_within(&n, Duration::from_secs(5)).unwrap();
}

/// `operationsApi.network.headersTimeout` ("time a client has to send the complete request
/// headers", config.example.yaml) must bound a slowloris head by itself.
#[test]
fn headers_timeout_setting_bounds_the_time_to_send_a_request_head() {
    let n = TestNode::start_with_env(
        &ips(SUITE, 1)[0],
        "",
        &[("OPERATIONSAPI_NETWORK_HEADERSTIMEOUT", "1s")],
    );
    let cut = trickle_until_cut(&n.addr(), Duration::from_secs(6));
    assert!(
        cut.is_some_and(|d| d < Duration::from_secs(4)),
        "with headersTimeout 1s a trickled head was still open after {cut:?}"
    );
}

#[test]
fn a_20_mib_header_line_is_refused_and_memory_stays_small() {
    let mut n = TestNode::start(&ips(SUITE, 1)[0], "");
    let pid = n.pid().unwrap();
    let before = proc_status(pid, "VmRSS");
    let line = vec![b'a'; 20 << 20];
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let addr = n.addr();
            let line = line.clone();
            std::thread::spawn(move || -> (bool, u16) {
                let mut s = connect(&addr);
                let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ");
                let sent_all = s.write_all(&line).is_ok() && s.write_all(b"\r\n\r\n").is_ok();
                let status = read_response(&mut s).map(|r| r.0).unwrap_or(0);
                (sent_all, status)
            })
        })
        .collect();
    let mut peak = before;
    let results: Vec<(bool, u16)> = threads
        .into_iter()
        .map(|t| {
            peak = peak.max(proc_status(pid, "VmRSS"));
            t.join().unwrap()
        })
        .collect();
    let after = proc_status(pid, "VmRSS");
    peak = peak.max(after);
    for (sent_all, status) in &results {
        assert!(
            *status == 431 || (*status == 0 && !sent_all) || (400..500).contains(status),
            "a 20 MiB header line was not refused: {results:?}"
        );
    }
    assert!(n.is_running(), "{}", n.log());
    assert!(
        peak < before + 16 * 1024,
        "RSS grew from {before} kB to {peak} kB for four 20 MiB header lines"
    );
    answered_within(&n, Duration::from_secs(5)).unwrap();
}

#[test]
fn max_connections_bounds_the_thread_count_under_100_idle_connections() {
    let n = TestNode::start_with_env(
        &ips(SUITE, 1)[0],
        "",
        &[("OPERATIONSAPI_NETWORK_MAXCONNECTIONS", "20")],
    );
    let pid = n.pid().unwrap();
    let baseline = proc_status(pid, "Threads");
    let conns: Vec<TcpStream> = (0..100)
        .filter_map(|_| {
            TcpStream::connect_timeout(&n.addr().parse().unwrap(), Duration::from_secs(2)).ok()
        })
        .collect();
    assert!(conns.len() >= 20, "only {} connections opened", conns.len());
    let mut peak = baseline;
    // Sample until the node has taken on as many connections as it will (the cap), and for a
    // while after that, recording the peak.
    let reached = wait_until(Duration::from_secs(10), || {
        peak = peak.max(proc_status(pid, "Threads"));
        peak >= baseline + 20
    });
    let t0 = Instant::now();
    wait_until(Duration::from_secs(5), || {
        peak = peak.max(proc_status(pid, "Threads"));
        t0.elapsed() > Duration::from_secs(1)
    });
    eprintln!("threads: baseline {baseline}, peak {peak}, cap reached: {reached}");
    assert!(
        peak <= baseline + 20 + 4,
        "{peak} threads with maxConnections 20 (baseline {baseline})"
    );
    drop(conns);
    assert!(
        wait_until(Duration::from_secs(15), || answered_within(
            &n,
            Duration::from_secs(2)
        )
        .is_ok()),
        "the node does not answer after the idle connections went away"
    );
}

#[test]
fn accept_keeps_working_after_running_out_of_file_descriptors() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    create_dog_table(&n);
    let pid = n.pid().unwrap();
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = open_fds + 8;
    let set = |soft: usize| {
        let ok = std::process::Command::new("prlimit")
            .arg("--pid")
            .arg(pid.to_string())
            .arg(format!("--nofile={soft}:"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "prlimit failed");
    };
    let original = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap();
    set(limit);
    // Far more connections than descriptors: accept() fails with EMFILE for most of them.
    let flood: Vec<TcpStream> = (0..60)
        .filter_map(|_| {
            TcpStream::connect_timeout(&n.addr().parse().unwrap(), Duration::from_secs(2)).ok()
        })
        .collect();
    let hit = wait_until(Duration::from_secs(10), || {
        n.log().contains("Error accepting new client")
    });
    drop(flood);
    set(original);
    assert!(
        hit,
        "the flood never ran the node out of descriptors (limit {limit}):\n{}",
        n.log()
    );
    assert!(
        wait_until(Duration::from_secs(15), || answered_within(
            &n,
            Duration::from_secs(2)
        )
        .is_ok()),
        "the node stopped accepting after EMFILE:\n{}",
        n.log()
    );
    let r = n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":1}]}));
    assert_eq!(r["inserted_hashes"], json!([1]));
}

/// Each worker thread verifies a password once (argon2, 19 MiB of scratch memory) and the
/// allocator keeps that memory per thread: RSS must not grow by the worker count times that.
#[test]
fn rss_stays_small_after_authenticated_requests_on_every_worker() {
    let n = TestNode::start(&ips(SUITE, 1)[0], "");
    let pid = n.pid().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let addr = n.addr();
            std::thread::spawn(move || {
                for _ in 0..8 {
                    let (s, _) = post(
                        &addr,
                        Some(&basic(USER, PASS)),
                        br#"{"operation":"describe_all"}"#,
                    );
                    assert_eq!(s, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let rss = proc_status(pid, "VmRSS");
    assert!(
        rss < 100 * 1024,
        "RSS is {} MB after 64 logged-in requests",
        rss / 1024
    );
}
