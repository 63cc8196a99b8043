//! What this machine can do at most, measured with the pieces Skerry is built on, for
//! `scripts/bench.sh`'s `ceiling` phase. Each command prints one JSON object.
//!
//!   ceiling fsync DIR SECONDS             appends of 64 bytes + fdatasync to a file in DIR
//!   ceiling fjall DIR SECONDS INDEXES     durable fjall batches of 1,000 records, each record
//!                                         written as Skerry writes it (the record, INDEXES
//!                                         index entries, its share of one audit entry per
//!                                         batch), one sync per batch
//!   ceiling gets DIR SECONDS THREADS      fjall point gets of the records written by `fjall`
//!   ceiling http SECONDS CLIENTS          no-op requests through the vendored tiny_http
//!                                         (thread per connection, as Skerry serves), keep-alive
//!   ceiling ws SECONDS                    WebSocket binary messages of 16 KiB between two
//!                                         threads over loopback TCP (tungstenite)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| die(&format!("missing or bad {what}")))
}

fn die(msg: &str) -> ! {
    eprintln!("ceiling: {msg}");
    std::process::exit(2);
}

/// A record shaped like the load generator's (7 attributes, ~190 bytes of JSON).
fn record(id: u64) -> Vec<u8> {
    format!(
        r#"{{"id":{id},"name":"user-{id:06}","email":"user{id}@example.test","city":"city-{}","score":{},"active":{},"note":"a note of some length to look like real data","__createdtime__":1796300000000,"__updatedtime__":1796300000000}}"#,
        id % 100,
        id % 1000,
        id.is_multiple_of(2)
    )
    .into_bytes()
}

fn fsync(dir: &str, secs: f64) {
    let path = std::path::Path::new(dir).join("ceiling-fsync.dat");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&[7u8; 64])
            .unwrap_or_else(|e| die(&e.to_string()));
        f.sync_data().unwrap_or_else(|e| die(&e.to_string()));
        n += 1;
    }
    let _ = std::fs::remove_file(&path);
    let s = start.elapsed().as_secs_f64();
    println!(
        "{{\"fsyncs\":{n},\"seconds\":{s:.3},\"fsyncs_per_s\":{:.1}}}",
        n as f64 / s
    );
}

fn open_db(dir: &str) -> fjall::Database {
    fjall::Database::builder(std::path::Path::new(dir).join("ceiling-fjall"))
        .open()
        .unwrap_or_else(|e| die(&e.to_string()))
}

fn ks(db: &fjall::Database, name: &str) -> fjall::Keyspace {
    db.keyspace(name, fjall::KeyspaceCreateOptions::default)
        .unwrap_or_else(|e| die(&e.to_string()))
}

fn fjall_writes(dir: &str, secs: f64, indexes: usize) {
    const BATCH: u64 = 1000;
    let db = open_db(dir);
    let (data, index, audit) = (ks(&db, "d"), ks(&db, "i"), ks(&db, "audit"));
    let start = Instant::now();
    let mut id = 0u64;
    let mut batches = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let mut b = db.batch();
        let mut audit_entry = Vec::with_capacity(256 * BATCH as usize);
        for _ in 0..BATCH {
            let pk = id.to_be_bytes();
            let rec = record(id);
            for a in 0..indexes as u32 {
                let mut k = Vec::with_capacity(32);
                k.extend_from_slice(&a.to_be_bytes());
                k.extend_from_slice(&rec[(a as usize * 7) % 64..(a as usize * 7) % 64 + 12]);
                k.extend_from_slice(&pk);
                b.insert(&index, k, []);
            }
            audit_entry.extend_from_slice(&rec);
            b.insert(&data, pk, rec);
            id += 1;
        }
        b.insert(&audit, batches.to_be_bytes(), audit_entry);
        b.commit().unwrap_or_else(|e| die(&e.to_string()));
        db.persist(fjall::PersistMode::SyncData)
            .unwrap_or_else(|e| die(&e.to_string()));
        batches += 1;
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "{{\"records\":{id},\"batches\":{batches},\"indexes\":{indexes},\"seconds\":{s:.3},\"records_per_s\":{:.1}}}",
        id as f64 / s
    );
}

fn gets(dir: &str, secs: f64, threads: usize) {
    let db = open_db(dir);
    let data = ks(&db, "d");
    let n = data
        .last_key_value()
        .and_then(|g| g.key().ok())
        .map(|k| u64::from_be_bytes(k[..8].try_into().unwrap_or_default()) + 1)
        .unwrap_or_else(|| die("no records: run `ceiling fjall` first"));
    let total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (data, total) = (data.clone(), total.clone());
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                let mut done = 0u64;
                while start.elapsed().as_secs_f64() < secs {
                    for _ in 0..256 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let key = (x % n).to_be_bytes();
                        if data.get(key).ok().flatten().is_some() {
                            done += 1;
                        }
                    }
                }
                total.fetch_add(done, Ordering::Relaxed);
            })
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
    let s = start.elapsed().as_secs_f64();
    let g = total.load(Ordering::Relaxed);
    println!(
        "{{\"gets\":{g},\"threads\":{threads},\"seconds\":{s:.3},\"gets_per_s\":{:.1}}}",
        g as f64 / s
    );
}

fn http(secs: f64, clients: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| die(&e.to_string()));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| die(&e.to_string()));
    let handler: tiny_http::RequestHandler = Arc::new(|mut rq: tiny_http::Request| {
        let mut body = Vec::new();
        let _ = rq.as_reader().read_to_end(&mut body);
        let _ = rq.respond(tiny_http::Response::from_data(b"{}".to_vec()));
    });
    let _server = tiny_http::Server::from_listener_with_handler(
        listener,
        tiny_http::ConnectionOptions::default(),
        handler,
    )
    .unwrap_or_else(|e| die(&e.to_string()));
    let total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let body = r#"{"operation":"search_by_id","database":"bench","table":"t","ids":[1],"get_attributes":["*"]}"#;
    let req = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Basic YWRtaW46cGFzc3dvcmQ=\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let hs: Vec<_> = (0..clients)
        .map(|_| {
            let (total, req) = (total.clone(), req.clone());
            std::thread::spawn(move || {
                let s = TcpStream::connect(addr).unwrap_or_else(|e| die(&e.to_string()));
                let _ = s.set_nodelay(true);
                let mut w = s.try_clone().unwrap_or_else(|e| die(&e.to_string()));
                let mut r = BufReader::new(s);
                let mut done = 0u64;
                let mut line = String::new();
                while start.elapsed().as_secs_f64() < secs {
                    if w.write_all(req.as_bytes()).is_err() {
                        break;
                    }
                    let mut len = 0usize;
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut b = vec![0u8; len];
                    if r.read_exact(&mut b).is_err() {
                        return;
                    }
                    done += 1;
                }
                total.fetch_add(done, Ordering::Relaxed);
            })
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
    let s = start.elapsed().as_secs_f64();
    let n = total.load(Ordering::Relaxed);
    println!(
        "{{\"requests\":{n},\"clients\":{clients},\"seconds\":{s:.3},\"requests_per_s\":{:.1}}}",
        n as f64 / s
    );
}

fn ws(secs: f64) {
    const SIZE: usize = 16 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| die(&e.to_string()));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| die(&e.to_string()));
    let stop = Arc::new(AtomicBool::new(false));
    let got = Arc::new(AtomicU64::new(0));
    let (stop2, got2) = (stop.clone(), got.clone());
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap_or_else(|e| die(&e.to_string()));
        let _ = s.set_nodelay(true);
        let mut ws = tungstenite::accept(s).unwrap_or_else(|e| die(&e.to_string()));
        while !stop2.load(Ordering::Relaxed) {
            match ws.read() {
                Ok(tungstenite::Message::Binary(_)) => {
                    got2.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let s = TcpStream::connect(addr).unwrap_or_else(|e| die(&e.to_string()));
    let _ = s.set_nodelay(true);
    let (mut ws, _) =
        tungstenite::client(format!("ws://{addr}/"), s).unwrap_or_else(|e| die(&e.to_string()));
    let payload = vec![42u8; SIZE];
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        if ws
            .send(tungstenite::Message::Binary(payload.clone().into()))
            .is_err()
        {
            break;
        }
    }
    let s = start.elapsed().as_secs_f64();
    let _ = ws.close(None);
    let _ = ws.flush();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    drop(ws);
    let _ = server.join();
    let n = got.load(Ordering::Relaxed);
    println!(
        "{{\"messages\":{n},\"message_bytes\":{SIZE},\"seconds\":{s:.3},\"messages_per_s\":{:.1},\"mib_per_s\":{:.1}}}",
        n as f64 / s,
        n as f64 * SIZE as f64 / s / 1048576.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("fsync") => fsync(&args[2], arg(&args, 3, "SECONDS")),
        Some("fjall") => fjall_writes(&args[2], arg(&args, 3, "SECONDS"), arg(&args, 4, "INDEXES")),
        Some("gets") => gets(&args[2], arg(&args, 3, "SECONDS"), arg(&args, 4, "THREADS")),
        Some("http") => http(arg(&args, 2, "SECONDS"), arg(&args, 3, "CLIENTS")),
        Some("ws") => ws(arg(&args, 2, "SECONDS")),
        _ => die("usage: ceiling fsync|fjall|gets|http|ws ... (see the source header)"),
    }
}
