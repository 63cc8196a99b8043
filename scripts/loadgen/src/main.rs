//! skerry-loadgen: benchmark load generator for Skerry (and any Harper-compatible
//! operations API: `POST /` with a JSON body, HTTP Basic auth).
//!
//! Deliberately tiny and cheap to run: std threads (one keep-alive connection each),
//! a minimal blocking HTTP/1.1 client over `std::net::TcpStream`, request bodies
//! formatted into reused buffers, exact percentiles from raw microsecond samples.
//! Every mode prints exactly ONE JSON line of results on stdout; progress goes to stderr.
//! It also reports its own CPU time (from /proc/self/stat) so a benchmark can show
//! that the load generator was not the bottleneck. Only 127.0.0.0/8 targets are accepted.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HELP: &str = "\
loadgen - load generator for Skerry / Harper operations API (one JSON result line on stdout)

USAGE: loadgen <MODE> [--option value]...

Common options (all modes):
  --user U            Basic auth user            [admin]
  --pass P            Basic auth password        [password]
  --db D              database                   [bench]
  --table T           table                      [t]  (lag: probe table [lag])
  --no-setup          skip create_database/create_table before writing
URLs look like http://127.0.0.1:9925/ (port defaults to 9925); the host must be
localhost or 127.x.y.z - anything else is refused. https:// URLs are verified against
the CA certificate(s) in the PEM file named by LOADGEN_CAFILE.

MODES
  insert  --url URL [--clients 32] [--batch 1] [--records 200000] [--duration-s N] [--id-start 0]
          Insert records with unique ids id-start.. from N keep-alive clients; stops after
          --records (default 200000 unless --duration-s is given) or --duration-s, first hit.
  load    --url URL --records N [--batch 1000] [--clients 4] [--id-start 0]
          Bulk preload: insert tuned for throughput.
  read    --url URL --ids N [--clients 32] [--duration-s 10] [--query point]
          search_by_id point reads (get_attributes [\"*\"]) of random ids in [0, N).
          --query picks the request of each read, r random in [0, N) (score is r % 1000):
          point (search_by_id), sql-point (SELECT * ... WHERE id = r), range
          (search_by_conditions score between [s, s]), sql-range (SELECT * ... WHERE
          score BETWEEN s AND s).
  lag     --from URL --to URL [--count 300] [--rate R] [--background-clients K]
          [--bg-table lag_bg] [--warmup-s 1] [--interval-ms 0] [--sample-timeout-ms 10000]
          [--id-start <now-based>] [--setup-to]
          Replication lag: insert one record on --from, then poll --to with search_by_id
          back-to-back until it is returned; lag = first successful read - insert ack.
          With --rate R > 0, K background writers (default 4) insert into --bg-table on
          --from at R writes/s aggregate (token bucket) while the probe runs.
          --setup-to also creates the tables on --to (default: only on --from).
  wait-count --url URL --expect N [--timeout-s 60] [--interval-ms 20]
          Poll describe_table until record_count >= N; prints elapsed_ms.
          Exit status 2 if the timeout is reached (JSON is still printed).

OUTPUT (one JSON object on stdout; latencies in ms, exact nearest-rank percentiles)
  all modes: mode, wall_s, cpu_user_s, cpu_sys_s, cpu_s, cpu_pct (client CPU, % of one core)
  insert/load: requests, ok, records, errors, http_errors, io_errors, connects,
          requests_per_s, records_per_s, p50_ms p90_ms p99_ms p999_ms max_ms mean_ms
  read:   reads, not_found, errors, http_errors, io_errors, connects, reads_per_s, p50_ms..mean_ms
  lag:    samples, timeouts, insert_errors, poll_errors, polls, polls_per_sample,
          lag_p50_ms..lag_mean_ms, ack_p50_ms..ack_mean_ms (insert ack latency),
          bg_target_rate, bg_achieved_rate, bg_writes, bg_errors, bg_dropped, bg_p50_ms..
  wait-count: expect, record_count, reached, elapsed_ms, polls, errors
";

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() || argv.iter().any(|a| a == "--help" || a == "-h" || a == "help") {
        print!("{HELP}");
        return;
    }
    let res = Args::parse(&argv[1..]).and_then(|mut a| match argv[0].as_str() {
        "insert" => cmd_insert(&mut a, false),
        "load" => cmd_insert(&mut a, true),
        "read" => cmd_read(&mut a),
        "lag" => cmd_lag(&mut a),
        "wait-count" => cmd_wait_count(&mut a),
        m => Err(format!("unknown mode {m:?} (try --help)")),
    });
    match res {
        Ok(out) => {
            println!("{}", out.0);
            std::process::exit(out.1);
        }
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            std::process::exit(1);
        }
    }
}

/// (result JSON, exit code)
type CmdResult = Result<(Value, i32), String>;

// ---------------------------------------------------------------- arguments

struct Args(HashMap<String, String>);

impl Args {
    fn parse(v: &[String]) -> Result<Args, String> {
        let mut m = HashMap::new();
        let mut i = 0;
        while i < v.len() {
            let k = v[i].strip_prefix("--").ok_or_else(|| format!("unexpected argument {:?}", v[i]))?;
            if let Some((k, val)) = k.split_once('=') {
                m.insert(k.to_string(), val.to_string());
            } else if i + 1 < v.len() && !v[i + 1].starts_with("--") {
                m.insert(k.to_string(), v[i + 1].clone());
                i += 1;
            } else {
                m.insert(k.to_string(), String::new()); // flag
            }
            i += 1;
        }
        Ok(Args(m))
    }
    fn opt(&mut self, k: &str) -> Option<String> {
        self.0.remove(k)
    }
    fn str(&mut self, k: &str, default: &str) -> String {
        self.opt(k).unwrap_or_else(|| default.to_string())
    }
    fn req(&mut self, k: &str) -> Result<String, String> {
        self.opt(k).ok_or_else(|| format!("--{k} is required"))
    }
    fn num<T: std::str::FromStr>(&mut self, k: &str, default: T) -> Result<T, String> {
        match self.opt(k) {
            None => Ok(default),
            Some(s) => s.parse().map_err(|_| format!("--{k}: bad number {s:?}")),
        }
    }
    fn flag(&mut self, k: &str) -> bool {
        self.opt(k).is_some()
    }
    /// Fails on any option that no mode consumed (catches typos).
    fn finish(&self) -> Result<(), String> {
        match self.0.keys().next() {
            Some(k) => Err(format!("unknown option --{k} for this mode")),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------- HTTP client

#[derive(Clone)]
struct Target {
    /// TLS client configuration for https:// targets.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    addr: SocketAddr,
    host: String,
    path: String,
    auth: String,
}

/// Parses `http://host[:port][/path]`; only localhost / 127.0.0.0/8 are allowed.
fn parse_url(url: &str, user: &str, pass: &str) -> Result<Target, String> {
    let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (r, None),
        (None, Some(r)) => (r, Some(tls_config()?)),
        _ => return Err(format!("{url}: only http:// and https:// URLs are supported")),
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("{url}: bad port"))?),
        None => (hostport, 9925),
    };
    let ip: Ipv4Addr = if host.eq_ignore_ascii_case("localhost") {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse().map_err(|_| format!("{url}: host must be localhost or 127.x.y.z"))?
    };
    if ip.octets()[0] != 127 {
        return Err(format!("{url}: refusing non-loopback host {ip} (127.0.0.0/8 only)"));
    }
    Ok(Target {
        tls,
        addr: SocketAddr::from((ip, port)),
        host: format!("{ip}:{port}"),
        path: path.to_string(),
        auth: base64(format!("{user}:{pass}").as_bytes()),
    })
}

/// rustls (ring) trusting the CA(s) of `LOADGEN_CAFILE`.
fn tls_config() -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let path = std::env::var("LOADGEN_CAFILE").map_err(|_| "https:// needs LOADGEN_CAFILE".to_string())?;
    let pem = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.map_err(|e| format!("{path}: {e}"))?).map_err(|e| e.to_string())?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(std::sync::Arc::new(cfg))
}

/// A connection: plain TCP or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One keep-alive connection. `post` reconnects transparently when needed.
struct Conn {
    t: Target,
    stream: Option<BufReader<Stream>>,
    req: Vec<u8>,
    line: Vec<u8>,
    connects: u64,
}

impl Conn {
    fn new(t: &Target) -> Conn {
        Conn { t: t.clone(), stream: None, req: Vec::with_capacity(4096), line: Vec::new(), connects: 0 }
    }

    /// Sends one POST; the response body lands in `body`. Returns the HTTP status.
    /// A reused connection that fails before any response byte arrives (server closed
    /// an idle keep-alive connection) is retried once on a fresh connection.
    fn post(&mut self, payload: &[u8], body: &mut Vec<u8>) -> io::Result<u16> {
        self.req.clear();
        let t = &self.t;
        write!(
            self.req,
            "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            t.path,
            t.host,
            t.auth,
            payload.len()
        )?;
        self.req.extend_from_slice(payload);
        for attempt in 0..2 {
            let reused = self.stream.is_some();
            if !reused {
                let s = TcpStream::connect_timeout(&self.t.addr, IO_TIMEOUT)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                let s = match &self.t.tls {
                    None => Stream::Plain(s),
                    Some(cfg) => {
                        let name = rustls::pki_types::ServerName::IpAddress(self.t.addr.ip().into());
                        let conn =
                            rustls::ClientConnection::new(cfg.clone(), name).map_err(io::Error::other)?;
                        Stream::Tls(Box::new(rustls::StreamOwned::new(conn, s)))
                    }
                };
                self.stream = Some(BufReader::with_capacity(64 * 1024, s));
                self.connects += 1;
            }
            let r = self.stream.as_mut().unwrap();
            let mut started = false;
            let res = r
                .get_mut()
                .write_all(&self.req)
                .and_then(|_| read_response(r, &mut self.line, body, &mut started));
            match res {
                Ok((status, keep_alive)) => {
                    if !keep_alive {
                        self.stream = None;
                    }
                    return Ok(status);
                }
                Err(e) => {
                    self.stream = None;
                    if !(reused && !started && attempt == 0) {
                        return Err(e);
                    }
                }
            }
        }
        unreachable!()
    }
}

/// Reads one response (skipping 1xx). Returns (status, connection reusable).
/// `started` is set once any byte of the response has been read.
fn read_response<R: BufRead>(
    r: &mut R,
    line: &mut Vec<u8>,
    body: &mut Vec<u8>,
    started: &mut bool,
) -> io::Result<(u16, bool)> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    loop {
        line.clear();
        if r.read_until(b'\n', line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        *started = true;
        let status_line = std::str::from_utf8(line).map_err(|_| bad("non-utf8 status line"))?;
        let mut parts = status_line.split_ascii_whitespace();
        let version = parts.next().unwrap_or("");
        let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad status line"))?;
        if !version.starts_with("HTTP/1.") {
            return Err(bad("not an HTTP/1.x response"));
        }
        let mut keep_alive = version != "HTTP/1.0";
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        loop {
            line.clear();
            if r.read_until(b'\n', line)? == 0 {
                return Err(bad("eof in headers"));
            }
            let h = std::str::from_utf8(line).map_err(|_| bad("non-utf8 header"))?.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((name, val)) = h.split_once(':') else {
                continue;
            };
            let val = val.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(val.parse().map_err(|_| bad("bad content-length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = val.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                let v = val.to_ascii_lowercase();
                if v.contains("close") {
                    keep_alive = false;
                } else if v.contains("keep-alive") {
                    keep_alive = true;
                }
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        body.clear();
        if status == 204 || status == 304 {
        } else if chunked {
            loop {
                line.clear();
                r.read_until(b'\n', line)?;
                let s = std::str::from_utf8(line).map_err(|_| bad("bad chunk size"))?;
                let s = s.split(';').next().unwrap_or("").trim();
                let n = usize::from_str_radix(s, 16).map_err(|_| bad("bad chunk size"))?;
                if n == 0 {
                    loop {
                        line.clear(); // trailers until the empty line
                        if r.read_until(b'\n', line)? == 0
                            || line.as_slice() == b"\r\n"
                            || line.as_slice() == b"\n"
                        {
                            break;
                        }
                    }
                    break;
                }
                let old = body.len();
                body.resize(old + n, 0);
                r.read_exact(&mut body[old..])?;
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf)?;
            }
        } else if let Some(n) = content_length {
            body.resize(n, 0);
            r.read_exact(body)?;
        } else {
            r.read_to_end(body)?;
            keep_alive = false;
        }
        return Ok((status, keep_alive));
    }
}

/// POSTs a JSON value, returns (status, parsed body or Null).
fn call(conn: &mut Conn, v: &Value) -> io::Result<(u16, Value)> {
    let mut body = Vec::new();
    let st = conn.post(v.to_string().as_bytes(), &mut body)?;
    Ok((st, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// create_database + create_table(primary_key id), tolerating "already exists".
fn setup(t: &Target, db: &str, tables: &[&str]) -> Result<(), String> {
    let mut c = Conn::new(t);
    let mut ops = vec![json!({"operation": "create_database", "database": db})];
    for tb in tables {
        ops.push(json!({"operation": "create_table", "database": db, "table": tb, "primary_key": "id"}));
    }
    for op in ops {
        let (st, resp) = call(&mut c, &op).map_err(|e| format!("setup on {}: {e}", t.host))?;
        let text = resp.to_string();
        if st != 200 && !text.contains("exist") {
            eprintln!("warning: {} on {} -> {st} {text}", op["operation"], t.host);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- measurement

/// Exact nearest-rank percentiles over µs samples, reported in ms.
fn lat_fields(out: &mut Value, prefix: &str, mut v: Vec<u32>) {
    v.sort_unstable();
    let ms = |us: u32| us as f64 / 1000.0;
    let pct = |p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        ms(v[rank.min(v.len()) - 1])
    };
    let mean =
        if v.is_empty() { 0.0 } else { v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1000.0 };
    for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)] {
        out[format!("{prefix}{name}_ms")] = json!(pct(p));
    }
    out[format!("{prefix}max_ms")] = json!(v.last().map_or(0.0, |&x| ms(x)));
    out[format!("{prefix}mean_ms")] = json!((mean * 1000.0).round() / 1000.0);
}

fn us_since(t: Instant) -> u32 {
    t.elapsed().as_micros().min(u32::MAX as u128) as u32
}

/// utime + stime of this whole process (all threads), in clock ticks (USER_HZ = 100).
fn cpu_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    (f.get(11).copied().unwrap_or(0), f.get(12).copied().unwrap_or(0))
}

/// Wall clock and client CPU accounting for one run.
struct Clock {
    start: Instant,
    cpu: (u64, u64),
}

impl Clock {
    fn start() -> Clock {
        Clock { start: Instant::now(), cpu: cpu_ticks() }
    }
    fn wall(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
    fn fields(&self, out: &mut Value) {
        let (u, s) = cpu_ticks();
        let (u, s) = ((u - self.cpu.0) as f64 / 100.0, (s - self.cpu.1) as f64 / 100.0);
        let wall = self.wall();
        out["wall_s"] = json!(round3(wall));
        out["cpu_user_s"] = json!(u);
        out["cpu_sys_s"] = json!(s);
        out["cpu_s"] = json!(round3(u + s));
        // percent of ONE core; 200 would mean both cores of a 2-core box
        out["cpu_pct"] = json!(round3((u + s) / wall.max(1e-9) * 100.0));
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Shared counters read by the once-a-second stderr progress printer.
#[derive(Default)]
struct Progress {
    reqs: AtomicU64,
    recs: AtomicU64,
    errs: AtomicU64,
    stop: AtomicBool,
}

fn progress_printer(p: &Progress, label: &str) {
    let t0 = Instant::now();
    let (mut last_t, mut last_r) = (t0, 0);
    let mut next = t0 + Duration::from_secs(1);
    while !p.stop.load(Relaxed) {
        thread::sleep(Duration::from_millis(50));
        if Instant::now() < next {
            continue;
        }
        next += Duration::from_secs(1);
        let (recs, now) = (p.recs.load(Relaxed), Instant::now());
        let rate = (recs - last_r) as f64 / (now - last_t).as_secs_f64();
        eprintln!(
            "[{label}] {:>5.1}s  {}/s={rate:>9.0}  total={recs}  requests={}  errors={}",
            (now - t0).as_secs_f64(),
            if label == "read" { "reads" } else { "records" },
            p.reqs.load(Relaxed),
            p.errs.load(Relaxed)
        );
        (last_t, last_r) = (now, recs);
    }
}

/// Per-thread client state: reused buffers and raw results of one connection.
#[derive(Default)]
struct Worker {
    lat: Vec<u32>,
    ok: u64,
    http_err: u64,
    io_err: u64,
    records: u64,
    not_found: u64,
    connects: u64,
    consecutive_io: u32,
    rng: u64,
    buf: String,
    resp: Vec<u8>,
}

impl Worker {
    /// POSTs `self.buf` and accounts the outcome (latency = send to full response).
    /// Returns the status, None on a transport error; after 50 transport errors in a
    /// row (server gone) it sets `p.stop` so the whole run ends.
    fn send(&mut self, conn: &mut Conn, p: &Progress) -> Option<u16> {
        let t0 = Instant::now();
        let r = conn.post(self.buf.as_bytes(), &mut self.resp);
        p.reqs.fetch_add(1, Relaxed);
        match r {
            Ok(st) => {
                self.lat.push(us_since(t0));
                self.consecutive_io = 0;
                if st == 200 {
                    self.ok += 1;
                } else {
                    self.http_err += 1;
                    p.errs.fetch_add(1, Relaxed);
                }
                Some(st)
            }
            Err(e) => {
                self.io_err += 1;
                self.consecutive_io += 1;
                p.errs.fetch_add(1, Relaxed);
                if self.consecutive_io == 1 {
                    eprintln!("transport error: {e}");
                }
                if self.consecutive_io >= 50 {
                    eprintln!("giving up after 50 consecutive transport errors");
                    p.stop.store(true, Relaxed);
                }
                thread::sleep(Duration::from_millis(10));
                None
            }
        }
    }
}

/// Runs `clients` threads, each with its own keep-alive connection to `t`, calling
/// `step(worker, conn, thread_index)` until it returns false or `p.stop` is set.
/// Prints progress to stderr and returns the merged results.
fn run_clients<F>(t: &Target, clients: usize, p: &Progress, label: &str, step: F) -> Worker
where
    F: Fn(&mut Worker, &mut Conn, usize) -> bool + Sync,
{
    thread::scope(|s| {
        s.spawn(|| progress_printer(p, label));
        let step = &step;
        let hs: Vec<_> = (0..clients)
            .map(|i| {
                s.spawn(move || {
                    let (mut w, mut conn) = (Worker::default(), Conn::new(t));
                    while !p.stop.load(Relaxed) {
                        if !step(&mut w, &mut conn, i) {
                            break;
                        }
                    }
                    w.connects = conn.connects;
                    w
                })
            })
            .collect();
        let mut m = Worker::default();
        for h in hs {
            let w = h.join().unwrap();
            m.lat.extend(w.lat);
            m.ok += w.ok;
            m.http_err += w.http_err;
            m.io_err += w.io_err;
            m.records += w.records;
            m.not_found += w.not_found;
            m.connects += w.connects;
        }
        p.stop.store(true, Relaxed);
        m
    })
}

// ---------------------------------------------------------------- workload

const CITIES: [&str; 8] =
    ["Denver", "Boulder", "Austin", "Seattle", "Portland", "Chicago", "Boston", "Phoenix"];
const NOTE: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmo";

/// One bench record, shaped like Harper's benchmark rows.
fn write_record(buf: &mut String, id: u64) {
    let city = CITIES[(id % 8) as usize];
    let score = id.wrapping_mul(2_654_435_761) % 1000;
    let active = id.is_multiple_of(3);
    let _ = write!(
        buf,
        r#"{{"id":{id},"name":"user-{id:06}","email":"user{id}@example.test","city":"{city}","score":{score},"active":{active},"note":"{NOTE}"}}"#
    );
}

/// Fills `buf` with an insert operation for ids `id0..id0+n` into `db`/`table` (pre-quoted).
fn insert_body(buf: &mut String, db: &str, table: &str, id0: u64, n: u64) {
    buf.clear();
    let _ = write!(buf, r#"{{"operation":"insert","database":{db},"table":{table},"records":["#);
    for i in 0..n {
        if i > 0 {
            buf.push(',');
        }
        write_record(buf, id0 + i);
    }
    buf.push_str("]}");
}

fn search_body(buf: &mut String, db: &str, table: &str, id: u64) {
    buf.clear();
    let _ = write!(
        buf,
        r#"{{"operation":"search_by_id","database":{db},"table":{table},"ids":[{id}],"get_attributes":["*"]}}"#
    );
}

/// The request of one read of `--query` kind `kind` for random `r`.
fn query_body(buf: &mut String, kind: &str, db: &str, table: &str, r: u64) {
    // `db`/`table` arrive JSON-quoted; SQL names them bare.
    let (bdb, btable) = (db.trim_matches('"'), table.trim_matches('"'));
    let score = r % 1000;
    match kind {
        "sql-point" => {
            buf.clear();
            let _ = write!(
                buf,
                r#"{{"operation":"sql","sql":"SELECT * FROM `{bdb}`.`{btable}` WHERE id = {r}"}}"#
            );
        }
        "range" => {
            buf.clear();
            let _ = write!(
                buf,
                r#"{{"operation":"search_by_conditions","database":{db},"table":{table},"get_attributes":["*"],"conditions":[{{"attribute":"score","comparator":"between","value":[{score},{score}]}}]}}"#
            );
        }
        "sql-range" => {
            buf.clear();
            let _ = write!(
                buf,
                r#"{{"operation":"sql","sql":"SELECT * FROM `{bdb}`.`{btable}` WHERE score BETWEEN {score} AND {score}"}}"#
            );
        }
        _ => search_body(buf, db, table, r),
    }
}

fn q(s: &str) -> String {
    Value::from(s).to_string()
}

fn is_found(body: &[u8]) -> bool {
    matches!(serde_json::from_slice::<Value>(body), Ok(Value::Array(a)) if !a.is_empty())
}

/// Common options: (user, pass, db, no_setup)
fn common(a: &mut Args, default_table: &str) -> (String, String, String, String, bool) {
    let user = a.str("user", "admin");
    let pass = a.str("pass", "password");
    (user, pass, a.str("db", "bench"), a.str("table", default_table), a.flag("no-setup"))
}

fn cmd_insert(a: &mut Args, load: bool) -> CmdResult {
    let (user, pass, db, table, no_setup) = common(a, "t");
    let t = parse_url(&a.req("url")?, &user, &pass)?;
    let clients: usize = a.num("clients", if load { 4 } else { 32 })?;
    let batch: u64 = a.num("batch", if load { 1000 } else { 1 })?;
    let duration =
        a.opt("duration-s").map(|s| s.parse::<f64>()).transpose().map_err(|_| "--duration-s: bad number")?;
    let records: u64 = if load {
        a.req("records")?.parse().map_err(|_| "--records: bad number")?
    } else {
        a.num("records", if duration.is_some() { u64::MAX } else { 200_000 })?
    };
    let id_start: u64 = a.num("id-start", 0)?;
    a.finish()?;
    if clients == 0 || batch == 0 {
        return Err("--clients and --batch must be > 0".into());
    }
    if !no_setup {
        setup(&t, &db, &[&table])?;
    }
    let mode = if load { "load" } else { "insert" };
    eprintln!("[{mode}] {} clients={clients} batch={batch} records={records} duration={duration:?}", t.host);
    let (qdb, qtable) = (q(&db), q(&table));
    let next = AtomicU64::new(0);
    let p = Progress::default();
    let clock = Clock::start();
    let deadline = duration.map(|d| clock.start + Duration::from_secs_f64(d));
    let m = run_clients(&t, clients, &p, mode, |w, conn, _| {
        let k = next.fetch_add(batch, Relaxed);
        if k >= records || deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        let n = batch.min(records - k);
        insert_body(&mut w.buf, &qdb, &qtable, id_start + k, n);
        if w.send(conn, &p) == Some(200) {
            w.records += n;
            p.recs.fetch_add(n, Relaxed);
        }
        true
    });
    let wall = clock.wall();
    let mut out = json!({
        "mode": mode, "url": format!("http://{}{}", t.host, t.path), "db": db, "table": table,
        "clients": clients, "batch": batch, "id_start": id_start,
        "requests": m.ok + m.http_err + m.io_err, "ok": m.ok, "records": m.records,
        "errors": m.http_err + m.io_err, "http_errors": m.http_err, "io_errors": m.io_err,
        "connects": m.connects,
        "requests_per_s": round3((m.ok + m.http_err) as f64 / wall),
        "records_per_s": round3(m.records as f64 / wall),
    });
    lat_fields(&mut out, "", m.lat);
    clock.fields(&mut out);
    Ok((out, 0))
}

fn cmd_read(a: &mut Args) -> CmdResult {
    let (user, pass, db, table, _) = common(a, "t");
    let t = parse_url(&a.req("url")?, &user, &pass)?;
    let clients: usize = a.num("clients", 32)?;
    let duration: f64 = a.num("duration-s", 10.0)?;
    let ids: u64 = a.req("ids")?.parse().map_err(|_| "--ids: bad number")?;
    let kind = a.str("query", "point");
    a.finish()?;
    if !["point", "sql-point", "range", "sql-range"].contains(&kind.as_str()) {
        return Err(format!("--query: unknown kind {kind:?}"));
    }
    if ids == 0 || clients == 0 {
        return Err("--ids and --clients must be > 0".into());
    }
    eprintln!("[read] {} clients={clients} ids=[0,{ids}) duration={duration}s", t.host);
    let (qdb, qtable) = (q(&db), q(&table));
    let p = Progress::default();
    let clock = Clock::start();
    let deadline = clock.start + Duration::from_secs_f64(duration);
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let m = run_clients(&t, clients, &p, "read", |w, conn, i| {
        if Instant::now() >= deadline {
            return false;
        }
        if w.rng == 0 {
            w.rng = (seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
        }
        w.rng ^= w.rng << 13; // xorshift64
        w.rng ^= w.rng >> 7;
        w.rng ^= w.rng << 17;
        query_body(&mut w.buf, &kind, &qdb, &qtable, w.rng % ids);
        if w.send(conn, &p) == Some(200) {
            p.recs.fetch_add(1, Relaxed);
            // cheap emptiness check: an empty result is exactly "[]"
            if w.resp.iter().filter(|b| !b.is_ascii_whitespace()).take(3).eq(b"[]".iter()) {
                w.not_found += 1;
            }
        }
        true
    });
    let wall = clock.wall();
    let mut out = json!({
        "mode": "read", "query": kind, "url": format!("http://{}{}", t.host, t.path), "db": db, "table": table,
        "clients": clients, "ids": ids, "reads": m.ok, "not_found": m.not_found,
        "errors": m.http_err + m.io_err, "http_errors": m.http_err, "io_errors": m.io_err,
        "connects": m.connects, "reads_per_s": round3(m.ok as f64 / wall),
    });
    lat_fields(&mut out, "", m.lat);
    clock.fields(&mut out);
    Ok((out, 0))
}

fn cmd_lag(a: &mut Args) -> CmdResult {
    let (user, pass, db, table, no_setup) = common(a, "lag");
    let from = parse_url(&a.req("from")?, &user, &pass)?;
    let to = parse_url(&a.req("to")?, &user, &pass)?;
    let count: u64 = a.num("count", 300)?;
    let rate: f64 = a.num("rate", 0.0)?;
    let bg_clients: usize = a.num("background-clients", 4)?;
    let bg_clients = if rate > 0.0 { bg_clients.max(1) } else { 0 };
    let bg_table = a.str("bg-table", "lag_bg");
    let warmup: f64 = a.num("warmup-s", if rate > 0.0 { 1.0 } else { 0.0 })?;
    let interval = Duration::from_millis(a.num("interval-ms", 0)?);
    let sample_timeout = Duration::from_millis(a.num("sample-timeout-ms", 10_000)?);
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let id_start: u64 = a.num("id-start", now_ms * 1000)?; // fresh ids every run, < 2^53
    let setup_to = a.flag("setup-to");
    a.finish()?;
    if !no_setup {
        setup(&from, &db, &[&table, &bg_table])?;
        if setup_to {
            setup(&to, &db, &[&table, &bg_table])?;
        }
    }
    eprintln!("[lag] {} -> {} samples={count} bg_rate={rate}/s bg_clients={bg_clients}", from.host, to.host);
    let (qdb, qtable, qbg) = (q(&db), q(&table), q(&bg_table));
    let bg = Progress::default();
    let tick = AtomicU64::new(0);
    let bg_dropped = AtomicU64::new(0);
    let clock = Clock::start();
    let bg_start = Instant::now();
    let (bg_stats, bg_wall, probe) = thread::scope(|s| {
        let bg_run = s.spawn(|| {
            // token bucket: token n is due at bg_start + n/rate; tokens more than
            // 100 ms overdue are dropped (bounded burst) rather than sent late.
            run_clients(&from, bg_clients, &bg, "lag-bg", |w, conn, _| {
                let n = tick.fetch_add(1, Relaxed);
                let due = bg_start + Duration::from_secs_f64(n as f64 / rate);
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                } else if now - due > Duration::from_millis(100) {
                    bg_dropped.fetch_add(1, Relaxed);
                    return true;
                }
                if bg.stop.load(Relaxed) {
                    return false;
                }
                insert_body(&mut w.buf, &qdb, &qbg, id_start + n, 1);
                if w.send(conn, &bg) == Some(200) {
                    bg.recs.fetch_add(1, Relaxed);
                }
                true
            })
        });
        if warmup > 0.0 {
            thread::sleep(Duration::from_secs_f64(warmup));
        }
        let probe = run_probe(&from, &to, &qdb, &qtable, id_start, count, interval, sample_timeout);
        bg.stop.store(true, Relaxed);
        let bg_wall = bg_start.elapsed().as_secs_f64();
        (bg_run.join().unwrap(), bg_wall, probe)
    });
    let mut out = json!({
        "mode": "lag", "from": format!("http://{}{}", from.host, from.path),
        "to": format!("http://{}{}", to.host, to.path), "db": db, "table": table,
        "id_start": id_start, "count": count, "samples": probe.lags.len(),
        "timeouts": probe.timeouts, "insert_errors": probe.insert_errors, "poll_errors": probe.poll_errors,
        "polls": probe.polls, "polls_per_sample": round3(probe.polls as f64 / count.max(1) as f64),
        "bg_table": bg_table, "bg_clients": bg_clients, "bg_target_rate": rate,
        "bg_writes": bg_stats.ok, "bg_errors": bg_stats.http_err + bg_stats.io_err,
        "bg_dropped": bg_dropped.load(Relaxed),
        "bg_achieved_rate": round3(if bg_clients > 0 { bg_stats.ok as f64 / bg_wall } else { 0.0 }),
    });
    lat_fields(&mut out, "lag_", probe.lags);
    lat_fields(&mut out, "ack_", probe.acks);
    lat_fields(&mut out, "bg_", bg_stats.lat);
    clock.fields(&mut out);
    Ok((out, 0))
}

#[derive(Default)]
struct Probe {
    lags: Vec<u32>,
    acks: Vec<u32>,
    timeouts: u64,
    insert_errors: u64,
    poll_errors: u64,
    polls: u64,
}

#[allow(clippy::too_many_arguments)]
fn run_probe(
    from: &Target,
    to: &Target,
    qdb: &str,
    qtable: &str,
    id0: u64,
    count: u64,
    interval: Duration,
    timeout: Duration,
) -> Probe {
    let (mut wc, mut rc) = (Conn::new(from), Conn::new(to));
    let (mut buf, mut resp, mut pr) = (String::new(), Vec::new(), Probe::default());
    for i in 0..count {
        let id = id0 + i;
        insert_body(&mut buf, qdb, qtable, id, 1);
        let t0 = Instant::now();
        match wc.post(buf.as_bytes(), &mut resp) {
            Ok(200) => pr.acks.push(us_since(t0)),
            r => {
                pr.insert_errors += 1;
                eprintln!("[lag] insert {id} failed: {:?} {}", r, String::from_utf8_lossy(&resp));
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let ack = Instant::now();
        search_body(&mut buf, qdb, qtable, id);
        loop {
            pr.polls += 1;
            match rc.post(buf.as_bytes(), &mut resp) {
                Ok(200) if is_found(&resp) => {
                    pr.lags.push(us_since(ack));
                    break;
                }
                Ok(200) => {}
                _ => pr.poll_errors += 1,
            }
            if ack.elapsed() > timeout {
                pr.timeouts += 1;
                eprintln!("[lag] id {id} not visible on {} after {timeout:?}", to.host);
                break;
            }
        }
        if (i + 1) % 50 == 0 {
            let mut l = pr.lags.clone();
            l.sort_unstable();
            let med = l.get(l.len() / 2).copied().unwrap_or(0);
            eprintln!("[lag] {}/{count} samples, median so far {:.3} ms", i + 1, med as f64 / 1000.0);
        }
        if !interval.is_zero() {
            thread::sleep(interval);
        }
    }
    pr
}

fn cmd_wait_count(a: &mut Args) -> CmdResult {
    let (user, pass, db, table, _) = common(a, "t");
    let t = parse_url(&a.req("url")?, &user, &pass)?;
    let expect: u64 = a.req("expect")?.parse().map_err(|_| "--expect: bad number")?;
    let timeout: f64 = a.num("timeout-s", 60.0)?;
    let interval = Duration::from_millis(a.num("interval-ms", 20)?);
    a.finish()?;
    let start = Instant::now();
    let mut conn = Conn::new(&t);
    let op = json!({"operation": "describe_table", "database": db, "table": table});
    let (mut polls, mut count, mut errors, mut reached) = (0u64, 0u64, 0u64, false);
    let mut last_print = start;
    loop {
        polls += 1;
        match call(&mut conn, &op) {
            Ok((200, v)) => count = v["record_count"].as_u64().unwrap_or(count),
            Ok(_) | Err(_) => errors += 1,
        }
        if count >= expect {
            reached = true;
            break;
        }
        if start.elapsed().as_secs_f64() >= timeout {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!("[wait-count] {:.1}s record_count={count}/{expect}", start.elapsed().as_secs_f64());
        }
        // fixed cadence: poll k starts at start + k*interval (or at once if overdue)
        let due = start + interval * polls as u32;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            thread::sleep(d);
        }
    }
    let out = json!({
        "mode": "wait-count", "url": format!("http://{}{}", t.host, t.path), "db": db, "table": table,
        "expect": expect, "record_count": count, "reached": reached,
        "elapsed_ms": round3(start.elapsed().as_secs_f64() * 1000.0), "polls": polls, "errors": errors,
    });
    Ok((out, if reached { 0 } else { 2 }))
}

// ---------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_restricted_to_loopback() {
        assert!(parse_url("http://127.0.0.2:9925/", "a", "b").is_ok());
        assert_eq!(parse_url("http://localhost", "a", "b").unwrap().host, "127.0.0.1:9925");
        for bad in [
            "http://10.0.0.1:9925/",
            "http://example.com/",
            "https://127.0.0.1/",
            "http://[::1]:9925/",
            "http://128.0.0.1/",
        ] {
            assert!(parse_url(bad, "a", "b").is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_matches_rfc() {
        assert_eq!(base64(b"admin:password"), "YWRtaW46cGFzc3dvcmQ=");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn records_are_valid_json() {
        assert_eq!(NOTE.len(), 70);
        let mut b = String::new();
        insert_body(&mut b, &q("bench"), &q("t"), 12345, 3);
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["records"][0]["name"], "user-012345");
        assert_eq!(v["records"][0]["email"], "user12345@example.test");
        assert_eq!(v["records"][2]["id"], 12347);
        search_body(&mut b, &q("bench"), &q("t"), 7);
        assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["ids"][0], 7);
    }

    #[test]
    fn read_queries_are_valid_json_naming_the_same_rows() {
        let mut b = String::new();
        let body = |b: &mut String, kind| {
            query_body(b, kind, &q("bench"), &q("t"), 1234);
            serde_json::from_str::<Value>(b).unwrap()
        };
        assert_eq!(body(&mut b, "point")["ids"], json!([1234]));
        assert_eq!(body(&mut b, "sql-point")["sql"], "SELECT * FROM `bench`.`t` WHERE id = 1234");
        assert_eq!(body(&mut b, "range")["conditions"][0]["value"], json!([234, 234]));
        assert_eq!(
            body(&mut b, "sql-range")["sql"],
            "SELECT * FROM `bench`.`t` WHERE score BETWEEN 234 AND 234"
        );
    }

    #[test]
    fn parses_chunked_and_close() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2;x=y\r\n2]\r\n0\r\n\r\n\
HTTP/1.1 500 Err\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        let mut r = BufReader::new(&raw[..]);
        let (mut line, mut body, mut st) = (Vec::new(), Vec::new(), false);
        assert_eq!(read_response(&mut r, &mut line, &mut body, &mut st).unwrap(), (200, true));
        assert_eq!(body, b"[1,2]");
        assert_eq!(read_response(&mut r, &mut line, &mut body, &mut st).unwrap(), (500, false));
        assert_eq!(body, b"{}");
    }

    #[test]
    fn percentiles_exact() {
        let mut out = json!({});
        lat_fields(&mut out, "x_", (1..=1000u32).map(|i| i * 1000).collect());
        assert_eq!(out["x_p50_ms"], 500.0);
        assert_eq!(out["x_p99_ms"], 990.0);
        assert_eq!(out["x_max_ms"], 1000.0);
    }
}
