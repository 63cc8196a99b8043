//! A fault-injecting TCP proxy run inside the test process (std threads only).
//!
//! `Proxy::start(listen, target)` accepts on `listen` and forwards every connection to `target`,
//! binding the outgoing socket to the client's source IP (any 127.x address works on Linux
//! loopback), so the target still sees the real peer address: replication identity on the plain
//! port is the source IP. Controls:
//!
//! - `block(ip)` / `unblock(ip)`: new connections from that source IP are accepted and closed
//!   at once (existing ones are left alone; `cut()` them if needed);
//! - `cut()`: resets every current connection (linger 0 + shutdown, both sides);
//! - `blackhole(true)`: stops moving bytes in both directions on existing and new connections
//!   while keeping every socket open (a wedged link); `blackhole(false)` resumes, delivering
//!   whatever was held back;
//! - `stop()` / Drop: closes the listener and every connection.

#![allow(dead_code)]

use socket2::{Domain, Socket, Type};
use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a pump re-checks the flags while idle or held.
const TICK: Duration = Duration::from_millis(10);

struct Link {
    client: TcpStream,
    server: TcpStream,
}

#[derive(Default)]
struct Inner {
    blocked: Mutex<HashSet<IpAddr>>,
    blackhole: AtomicBool,
    stopping: AtomicBool,
    links: Mutex<HashMap<u64, Link>>,
    next_id: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
}

impl Inner {
    fn is_blackholed(&self) -> bool {
        self.blackhole.load(Ordering::SeqCst)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

pub struct Proxy {
    pub listen: SocketAddr,
    pub target: SocketAddr,
    inner: Arc<Inner>,
    acceptor: Option<JoinHandle<()>>,
}

fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    let _ = s.shutdown(Shutdown::Both);
}

impl Proxy {
    /// Listens on `listen` ("ip:port") and forwards to `target` ("ip:port").
    pub fn start(listen: &str, target: &str) -> Proxy {
        let listen: SocketAddr = listen.parse().expect("proxy listen address");
        let target: SocketAddr = target.parse().expect("proxy target address");
        let sock = Socket::new(Domain::for_address(listen), Type::STREAM, None).expect("socket");
        sock.set_reuse_address(true).expect("SO_REUSEADDR");
        sock.bind(&listen.into())
            .unwrap_or_else(|e| panic!("proxy cannot bind {listen}: {e}"));
        sock.listen(128).expect("listen");
        let listener: TcpListener = sock.into();
        let listen = listener.local_addr().expect("local addr");
        let inner = Arc::new(Inner::default());
        let acceptor = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{listen}"))
                .spawn(move || accept_loop(listener, target, inner))
                .expect("proxy thread")
        };
        Proxy {
            listen,
            target,
            inner,
            acceptor: Some(acceptor),
        }
    }

    /// Refuses new connections from `ip` (accepted, then closed at once).
    pub fn block(&self, ip: &str) {
        let ip: IpAddr = ip.parse().expect("ip");
        self.inner.blocked.lock().unwrap().insert(ip);
    }

    pub fn unblock(&self, ip: &str) {
        let ip: IpAddr = ip.parse().expect("ip");
        self.inner.blocked.lock().unwrap().remove(&ip);
    }

    /// Resets every current connection.
    pub fn cut(&self) {
        for (_, l) in self.inner.links.lock().unwrap().drain() {
            reset(&l.client);
            reset(&l.server);
        }
    }

    /// Stops (true) or resumes (false) moving bytes, keeping the sockets open.
    pub fn blackhole(&self, on: bool) {
        self.inner.blackhole.store(on, Ordering::SeqCst);
    }

    /// Connections forwarded so far (refused ones excluded).
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    /// Connections refused because their source IP was blocked.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::SeqCst)
    }

    /// Connections currently open.
    pub fn live(&self) -> usize {
        self.inner.links.lock().unwrap().len()
    }

    pub fn stop(&mut self) {
        if self.inner.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.listen, Duration::from_millis(500));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        self.cut();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, inner: Arc<Inner>) {
    for stream in listener.incoming() {
        if inner.stopping() {
            break;
        }
        let client = match stream {
            Ok(s) => s,
            Err(_) => {
                std::thread::sleep(TICK);
                continue;
            }
        };
        let src = match client.peer_addr() {
            Ok(a) => a.ip(),
            Err(_) => continue,
        };
        if inner.blocked.lock().unwrap().contains(&src) {
            inner.refused.fetch_add(1, Ordering::SeqCst);
            reset(&client);
            continue;
        }
        let inner = inner.clone();
        // Dial in a thread of its own so a slow target never stalls the accept loop.
        let _ = std::thread::Builder::new()
            .name("proxy-dial".into())
            .spawn(move || forward(client, src, target, inner));
    }
}

fn dial_from(src: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    if src.is_ipv4() == target.is_ipv4() {
        s.bind(&SocketAddr::new(src, 0).into())?;
    }
    s.connect_timeout(&target.into(), Duration::from_secs(5))?;
    s.set_tcp_nodelay(true)?;
    Ok(s.into())
}

fn forward(client: TcpStream, src: IpAddr, target: SocketAddr, inner: Arc<Inner>) {
    let server = match dial_from(src, target) {
        Ok(s) => s,
        Err(_) => {
            reset(&client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let id = inner.next_id.fetch_add(1, Ordering::SeqCst);
    let clones = (|| {
        Some((
            client.try_clone().ok()?,
            server.try_clone().ok()?,
            client.try_clone().ok()?,
            server.try_clone().ok()?,
        ))
    })();
    let Some((c1, s1, c2, s2)) = clones else {
        reset(&client);
        reset(&server);
        return;
    };
    if inner.stopping() {
        reset(&client);
        reset(&server);
        return;
    }
    inner
        .links
        .lock()
        .unwrap()
        .insert(id, Link { client, server });
    inner.accepted.fetch_add(1, Ordering::SeqCst);
    let up = {
        let inner = inner.clone();
        std::thread::Builder::new()
            .name("proxy-up".into())
            .spawn(move || pump(c1, s1, inner))
    };
    pump(s2, c2, inner.clone());
    if let Ok(t) = up {
        let _ = t.join();
    }
    inner.links.lock().unwrap().remove(&id);
}

/// Copies `from` → `to` until EOF or an error, holding bytes while the proxy is blackholed.
fn pump(mut from: TcpStream, mut to: TcpStream, inner: Arc<Inner>) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if inner.stopping() {
            break;
        }
        if inner.is_blackholed() {
            std::thread::sleep(TICK);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                // Bytes read just as the blackhole began are held until it ends.
                while inner.is_blackholed() && !inner.stopping() {
                    std::thread::sleep(TICK);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    reset(&from);
    reset(&to);
}
