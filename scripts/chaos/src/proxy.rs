//! The fault-injecting replication proxy of a chaos run (std threads only), a per-link variant
//! of tests/common/proxy.rs.
//!
//! One listener per node on `<ip>:9940` forwards to `<ip>:9933`, dialing from the connecting
//! node's own address (replication identity on the plain port is the source IP). Every link
//! (source node -> destination node) has a mode:
//! - `Up`: bytes flow;
//! - `Down`: existing connections are reset, new ones accepted and reset at once (partition);
//! - `Hold`: nothing moves either way, every socket stays open (a wedged link);
//! - `HalfOpen`: the destination's side is reset, the dialing node's side stays open and silent
//!   (its peer vanished without a FIN); new connections are accepted and never answered;
//! - `Delay(ms)`: each chunk is held `ms` before it is passed on.
//!
//! Leaving `HalfOpen` resets the silent sockets so the dialing node notices and redials. Must
//! never touch the operations port: clients reach nodes directly.

use socket2::{Domain, SockRef, Socket, Type};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    Down,
    Hold,
    HalfOpen,
    Delay(u64),
}

struct Link {
    src: IpAddr,
    dst: usize,
    client: TcpStream,
    server: Option<TcpStream>,
    /// The destination side was dropped for a half-open: the client side is left alone.
    half: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    modes: Mutex<HashMap<(IpAddr, usize), Mode>>,
    links: Mutex<HashMap<u64, Link>>,
    next: AtomicU64,
    stopping: AtomicBool,
}

impl Inner {
    fn mode(&self, src: IpAddr, dst: usize) -> Mode {
        self.modes
            .lock()
            .map(|m| m.get(&(src, dst)).copied().unwrap_or(Mode::Up))
            .unwrap_or(Mode::Up)
    }
}

pub struct Proxy {
    inner: Arc<Inner>,
    ips: Vec<IpAddr>,
}

fn reset(s: &TcpStream) {
    let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
    let _ = s.shutdown(Shutdown::Both);
}

impl Proxy {
    /// Listens on `<ip>:port` for every node ip, forwarding to `<ip>:9933`.
    pub fn start(ips: &[String], port: u16) -> Result<Proxy, String> {
        let inner = Arc::new(Inner::default());
        let mut parsed = Vec::new();
        for (dst, ip) in ips.iter().enumerate() {
            let listen: SocketAddr = format!("{ip}:{port}").parse().map_err(|e| format!("{e}"))?;
            let target: SocketAddr = format!("{ip}:9933").parse().map_err(|e| format!("{e}"))?;
            parsed.push(listen.ip());
            let sock = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
            sock.set_reuse_address(true).map_err(|e| e.to_string())?;
            sock.bind(&listen.into())
                .map_err(|e| format!("proxy cannot bind {listen}: {e}"))?;
            sock.listen(128).map_err(|e| e.to_string())?;
            let listener: TcpListener = sock.into();
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{dst}"))
                .spawn(move || accept_loop(listener, dst, target, inner))
                .map_err(|e| e.to_string())?;
        }
        Ok(Proxy { inner, ips: parsed })
    }

    /// Sets the mode of the link from node `src` to node `dst`.
    pub fn set(&self, src: usize, dst: usize, mode: Mode) {
        let ip = self.ips[src];
        let old = {
            let mut m = self.inner.modes.lock().unwrap_or_else(|e| e.into_inner());
            m.insert((ip, dst), mode).unwrap_or(Mode::Up)
        };
        let mut links = self.inner.links.lock().unwrap_or_else(|e| e.into_inner());
        let ids: Vec<u64> = links
            .iter()
            .filter(|(_, l)| l.src == ip && l.dst == dst)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let drop_it = match mode {
                Mode::Down => true,
                // Back from half-open or from a partition: the silent sockets go, so the
                // dialing node redials instead of waiting on a dead one forever.
                Mode::Up | Mode::Delay(_) => old == Mode::HalfOpen,
                Mode::HalfOpen => {
                    if let Some(l) = links.get(&id) {
                        l.half.store(true, Ordering::SeqCst);
                        if let Some(s) = &l.server {
                            reset(s);
                        }
                    }
                    false
                }
                Mode::Hold => false,
            };
            if drop_it {
                if let Some(l) = links.remove(&id) {
                    reset(&l.client);
                    if let Some(s) = &l.server {
                        reset(s);
                    }
                }
            }
        }
    }

    /// Sets every link into and out of `node`.
    pub fn isolate(&self, node: usize, mode: Mode) {
        for other in 0..self.ips.len() {
            if other != node {
                self.set(node, other, mode);
                self.set(other, node, mode);
            }
        }
    }

    /// Every link back to `Up` (half-open sockets reset).
    pub fn heal_all(&self) {
        for a in 0..self.ips.len() {
            for b in 0..self.ips.len() {
                if a != b {
                    self.set(a, b, Mode::Up);
                }
            }
        }
    }

    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let mut links = self.inner.links.lock().unwrap_or_else(|e| e.into_inner());
        for (_, l) in links.drain() {
            reset(&l.client);
            if let Some(s) = &l.server {
                reset(s);
            }
        }
    }
}

fn accept_loop(listener: TcpListener, dst: usize, target: SocketAddr, inner: Arc<Inner>) {
    for stream in listener.incoming() {
        if inner.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = stream else {
            std::thread::sleep(TICK);
            continue;
        };
        let Ok(src) = client.peer_addr().map(|a| a.ip()) else {
            continue;
        };
        let inner = inner.clone();
        let _ = std::thread::Builder::new()
            .name("proxy-conn".into())
            .spawn(move || forward(client, src, dst, target, inner));
    }
}

fn dial_from(src: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::new(src, 0).into())?;
    s.connect_timeout(&target.into(), Duration::from_secs(5))?;
    s.set_tcp_nodelay(true)?;
    Ok(s.into())
}

fn forward(client: TcpStream, src: IpAddr, dst: usize, target: SocketAddr, inner: Arc<Inner>) {
    let _ = client.set_nodelay(true);
    let half = Arc::new(AtomicBool::new(false));
    match inner.mode(src, dst) {
        Mode::Down => {
            reset(&client);
            return;
        }
        Mode::HalfOpen => {
            // Accepted, never answered: read and discard until healed or closed.
            half.store(true, Ordering::SeqCst);
            let Ok(c) = client.try_clone() else { return };
            let id = inner.next.fetch_add(1, Ordering::SeqCst);
            lock(&inner.links).insert(
                id,
                Link {
                    src,
                    dst,
                    client,
                    server: None,
                    half,
                },
            );
            discard(c, &inner, id);
            return;
        }
        _ => {}
    }
    let server = match dial_from(src, target) {
        Ok(s) => s,
        Err(_) => {
            reset(&client);
            return;
        }
    };
    let clones = (|| {
        Some((
            client.try_clone().ok()?,
            server.try_clone().ok()?,
            client.try_clone().ok()?,
            server.try_clone().ok()?,
            server.try_clone().ok()?,
        ))
    })();
    let Some((c1, s1, c2, s2, s_keep)) = clones else {
        reset(&client);
        reset(&server);
        return;
    };
    let id = inner.next.fetch_add(1, Ordering::SeqCst);
    lock(&inner.links).insert(
        id,
        Link {
            src,
            dst,
            client,
            server: Some(s_keep),
            half: half.clone(),
        },
    );
    let up = {
        let (inner, half) = (inner.clone(), half.clone());
        std::thread::Builder::new()
            .name("proxy-up".into())
            .spawn(move || pump(c1, s1, src, dst, &inner, &half, true))
    };
    pump(s2, c2, src, dst, &inner, &half, false);
    if let Ok(t) = up {
        let _ = t.join();
    }
    lock(&inner.links).remove(&id);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads and drops what a half-open link's client sends, until the link is healed (the socket
/// is reset by `set`) or the client closes.
fn discard(mut c: TcpStream, inner: &Inner, id: u64) {
    let _ = c.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if inner.stopping.load(Ordering::SeqCst) || !lock(&inner.links).contains_key(&id) {
            break;
        }
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    reset(&c);
    lock(&inner.links).remove(&id);
}

/// Copies `from` -> `to` following the link's mode. `upstream`: client -> node direction.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    src: IpAddr,
    dst: usize,
    inner: &Inner,
    half: &AtomicBool,
    upstream: bool,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if inner.stopping.load(Ordering::SeqCst) {
            break;
        }
        if half.load(Ordering::SeqCst) {
            if upstream {
                // The node side is gone; the client side stays open and unanswered.
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        continue
                    }
                    Err(_) => break,
                }
            }
            // Downstream: nothing more comes from the reset node side; leave the client be.
            return;
        }
        match inner.mode(src, dst) {
            Mode::Hold => {
                std::thread::sleep(TICK);
                continue;
            }
            Mode::Down => break,
            _ => {}
        }
        match from.read(&mut buf) {
            Ok(0) => {
                if !half.load(Ordering::SeqCst) {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => {
                loop {
                    match inner.mode(src, dst) {
                        Mode::Hold if !inner.stopping.load(Ordering::SeqCst) => {
                            std::thread::sleep(TICK)
                        }
                        Mode::Delay(ms) => {
                            std::thread::sleep(Duration::from_millis(ms));
                            break;
                        }
                        _ => break,
                    }
                }
                if half.load(Ordering::SeqCst) {
                    continue;
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
    if half.load(Ordering::SeqCst) {
        return;
    }
    reset(&from);
    reset(&to);
}
