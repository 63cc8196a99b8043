//! Test harness: real `skerry` processes on their own loopback addresses.
//!
//! Each node binds its own 127.x.y.z with the standard ports (9925 operations, 9933
//! replication), so tests and test binaries run in parallel without port clashes. Waits poll a
//! condition with a deadline (never a bare sleep as synchronisation). Nodes are killed and their
//! folders removed on drop.

#![allow(dead_code)]

pub mod cluster;
pub mod fakepeer;
pub mod proxy;
pub mod replay;
pub mod tlspeer;

use base64::Engine;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const USER: &str = "admin";
pub const PASS: &str = "password";

static COUNTER: AtomicU32 = AtomicU32::new(1);

/// `n` fresh loopback addresses `127.<suite>.<k>.<1..=n>` for one test. `suite` must differ
/// between test binaries (each file passes its own number).
///
/// Slots are spread by process id and a per-process counter (nextest runs every test in its own
/// process), and a slot is only handed out when its operations and replication ports are free
/// on every address, so concurrent test processes never share a node address.
pub fn ips(suite: u8, n: u8) -> Vec<String> {
    assert!((1..=40).contains(&n), "at most 40 nodes per test");
    let slots_per_third = 240 / u32::from(n).max(6);
    let mut seed = std::process::id().wrapping_mul(2_654_435_761);
    loop {
        let k = COUNTER.fetch_add(1, Ordering::SeqCst);
        seed = seed.wrapping_add(k.wrapping_mul(40_503)).rotate_left(7);
        let third = seed % 250;
        let base = (seed / 250) % slots_per_third * u32::from(n).max(6);
        let addrs: Vec<String> = (1..=u32::from(n))
            .map(|i| format!("127.{suite}.{third}.{}", base + i))
            .collect();
        let free = addrs.iter().all(|ip| {
            [9925, 9933]
                .iter()
                .all(|port| std::net::TcpListener::bind(format!("{ip}:{port}")).is_ok())
        });
        if free {
            return addrs;
        }
    }
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body bytes).
pub fn http_raw(addr: &str, request: &[u8], timeout: Duration) -> std::io::Result<(u16, Vec<u8>)> {
    let sock: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let mut s = TcpStream::connect_timeout(&sock, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&buf[..text_end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let mut body = buf[text_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..p]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < p + 2 + n {
            break;
        }
        out.extend_from_slice(&b[p + 2..p + 2 + n]);
        b = &b[(p + 4 + n).min(b.len())..];
    }
    out
}

pub fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// POSTs the operation `body` (a JSON value); `auth` as for [`post`].
pub fn post_json(addr: &str, auth: Option<&str>, body: Value) -> (u16, Value) {
    post(addr, auth, body.to_string().as_bytes())
}

/// POSTs an operation; `auth` is a full Authorization header value or None.
pub fn post(addr: &str, auth: Option<&str>, body: &[u8]) -> (u16, Value) {
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    match http_raw(addr, &bytes, Duration::from_secs(30)) {
        Ok((status, body)) => (
            status,
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into())),
        ),
        Err(e) => (0, json!({ "transport_error": e.to_string() })),
    }
}

pub struct TestNode {
    pub ip: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    extra_env: Vec<(String, String)>,
}

impl TestNode {
    /// Starts a node on `ip` with `extra_yaml` appended to a minimal config, and waits until it
    /// answers. Replication listens on `ip:9933` with `ip` as the node name.
    pub fn start(ip: &str, extra_yaml: &str) -> TestNode {
        Self::start_with_env(ip, extra_yaml, &[])
    }

    pub fn start_with_env(ip: &str, extra_yaml: &str, env: &[(&str, &str)]) -> TestNode {
        Self::start_full(ip, extra_yaml, env, None)
    }

    /// Starts a node whose data folder (rootPath) is `root` instead of one inside its test
    /// folder (e.g. on a test filesystem); `root` is neither created nor removed here.
    pub fn start_with_root(ip: &str, extra_yaml: &str, root: &Path) -> TestNode {
        Self::start_full(ip, extra_yaml, &[], Some(root))
    }

    fn start_full(
        ip: &str,
        extra_yaml: &str,
        env: &[(&str, &str)],
        root: Option<&Path>,
    ) -> TestNode {
        let dir = std::env::temp_dir().join(format!("skerry-test-{ip}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let config = dir.join("config.yaml");
        let yaml = format!(
            "rootPath: {root}\noperationsApi:\n  network:\n    port: \"{ip}:9925\"\nlogging:\n  level: info\n{extra_yaml}\n",
            root = root.map_or_else(|| dir.join("data"), Path::to_path_buf).display()
        );
        std::fs::write(&config, yaml).expect("write config");
        let mut n = TestNode {
            ip: ip.to_string(),
            dir,
            config,
            child: None,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        n.launch();
        n
    }

    pub fn addr(&self) -> String {
        format!("{}:9925", self.ip)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skerry"));
        cmd.arg("--config")
            .arg(&self.config)
            .env("HDB_ADMIN_USERNAME", USER)
            .env("HDB_ADMIN_PASSWORD", PASS)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn skerry"));
        let ok = wait_until(Duration::from_secs(30), || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "skerry on {} exited at start ({status}):\n{}",
                        self.ip,
                        self.log()
                    );
                }
            }
            http_raw(
                &self.addr(),
                b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                Duration::from_secs(2),
            )
            .is_ok_and(|(s, _)| s == 200)
        });
        assert!(ok, "skerry on {} did not start:\n{}", self.ip, self.log());
    }

    /// Sends an operation as the admin user.
    pub fn op(&self, body: Value) -> (u16, Value) {
        post(
            &self.addr(),
            Some(&basic(USER, PASS)),
            body.to_string().as_bytes(),
        )
    }

    /// Sends an operation that must succeed, returning its body.
    pub fn ok(&self, body: Value) -> Value {
        let (status, resp) = self.op(body.clone());
        assert_eq!(status, 200, "{body} -> {resp}");
        resp
    }

    pub fn op_as(&self, user: &str, pass: &str, body: Value) -> (u16, Value) {
        post(
            &self.addr(),
            Some(&basic(user, pass)),
            body.to_string().as_bytes(),
        )
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Starts again after a kill or stop.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "node is still running");
        self.launch();
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("--- log of node {} ---\n{}", self.ip, self.log());
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Creates `dev.dog` (primary key `id`) on a node.
pub fn create_dog_table(n: &TestNode) {
    n.ok(json!({"operation":"create_table","database":"dev","table":"dog","primary_key":"id"}));
}
