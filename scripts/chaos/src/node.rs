//! Skerry node processes of a chaos run and the minimal HTTP client that talks to them.
//!
//! Owns: starting a node (its config, data folder and log under the run folder), `kill -9`,
//! restart, and one operation per fresh connection (`Connection: close`), so an operation's
//! fate is never confused with a stale keep-alive socket. Must never kill a process it did not
//! start: every pid it signals is a `Child` it spawned.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "admin";
pub const PASS: &str = "password";
/// Nodes advertise ws://<ip>:PROXY_PORT: peers dial the run's proxy, which forwards to
/// <ip>:9933 from the dialing node's own address.
pub const PROXY_PORT: u16 = 9940;

/// What became of one HTTP request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A complete answer: status and body.
    Answer(u16, Value),
    /// The connection could not be opened: the node never saw the request.
    NotSent(String),
    /// Sent (at least partly), but no complete answer: the node may or may not have applied it.
    Unknown(String),
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Answer(status, v) => write!(f, "status {status}: {v}"),
            Reply::NotSent(e) => write!(f, "not sent: {e}"),
            Reply::Unknown(e) => write!(f, "no answer: {e}"),
        }
    }
}

fn basic() -> String {
    // base64("admin:password")
    "Basic YWRtaW46cGFzc3dvcmQ=".to_string()
}

/// POSTs `body` to the operations API at `addr` (ip:9925).
pub fn post(addr: &str, body: &Value, timeout: Duration) -> Reply {
    let sock: SocketAddr = match addr.parse() {
        Ok(s) => s,
        Err(e) => return Reply::NotSent(format!("bad address {addr}: {e}")),
    };
    let mut s = match TcpStream::connect_timeout(&sock, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => return Reply::NotSent(e.to_string()),
    };
    let text = body.to_string();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        basic(),
        text.len()
    );
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    if let Err(e) = s.write_all(req.as_bytes()) {
        return Reply::Unknown(format!("write: {e}"));
    }
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf) {
        return Reply::Unknown(format!("read: {e}"));
    }
    match parse_response(&buf) {
        Some((status, body)) => Reply::Answer(status, body),
        None => Reply::Unknown(format!("incomplete answer ({} bytes)", buf.len())),
    }
}

fn parse_response(buf: &[u8]) -> Option<(u16, Value)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = buf[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    } else if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        if body.len() < len {
            return None;
        }
        body.truncate(len);
    }
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    Some((status, v))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let p = b.windows(2).position(|w| w == b"\r\n")?;
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..p]).trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        if b.len() < p + 2 + n {
            return None;
        }
        out.extend_from_slice(&b[p + 2..p + 2 + n]);
        b = &b[(p + 4 + n).min(b.len())..];
    }
}

pub struct Node {
    pub idx: usize,
    pub ip: String,
    pub dir: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
    pub starts: u32,
    /// `SKERRY_TEST_CLOCK_OFFSET_MS` of the next start (the clock-jump scenario lowers it).
    pub clock_offset_ms: i64,
}

impl Node {
    pub fn new(idx: usize, ip: &str, run_dir: &Path, bin: &Path, retention_s: u64) -> Node {
        let dir = run_dir.join(format!("node{idx}"));
        let _ = std::fs::create_dir_all(&dir);
        let yaml = format!(
            "rootPath: {root}\noperationsApi:\n  network:\n    port: \"{ip}:9925\"\nlogging:\n  level: info\n\
             replication:\n  hostname: {ip}\n  port: \"{ip}:9933\"\n  url: ws://{ip}:{PROXY_PORT}\n  pingInterval: 1s\n  auditRetention: {retention_s}s\n",
            root = dir.join("data").display()
        );
        if let Err(e) = std::fs::write(dir.join("config.yaml"), yaml) {
            panic!("cannot write the config of node {idx}: {e}");
        }
        Node {
            idx,
            ip: ip.to_string(),
            dir,
            bin: bin.to_path_buf(),
            child: None,
            starts: 0,
            clock_offset_ms: 0,
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// Spawns the node and waits until /health answers (bounded).
    pub fn start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("log of node {}: {e}", self.idx))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.join("config.yaml"))
            .env("HDB_ADMIN_USERNAME", USER)
            .env("HDB_ADMIN_PASSWORD", PASS)
            // A received full copy pauses after each batch, so a copy lasts long enough to be
            // interrupted (the "full copy interrupted again and again" scenario).
            .env("SKERRY_TEST_COPY_DELAY_MS", "300")
            .env(
                "SKERRY_TEST_CLOCK_OFFSET_MS",
                self.clock_offset_ms.to_string(),
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        let pid = child.id();
        let _ = std::fs::write(self.dir.join("pid"), pid.to_string());
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("node {} exited at start: {status}", self.idx));
                }
            }
            let health = format!("{}:9925", self.ip);
            if health_ok(&health) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {} did not answer /health within 60 s",
                    self.idx
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: nothing is flushed.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("pid"));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn health_ok(addr: &str) -> bool {
    let Ok(sock) = addr.parse::<SocketAddr>() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&sock, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200")
}
