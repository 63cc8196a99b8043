//! One replication WebSocket: handshake, framing, pings, liveness and a byte pump.
//!
//! tungstenite needs `&mut` for both reading and writing, and a socket thread must wake at once
//! both when its peer sends something and when there is something to send (a new commit, an
//! acknowledgement). Polling with read timeouts would put an 8-12 ms floor under every wake on
//! this kind of machine (SO_RCVTIMEO granularity), so each connection has a small reader thread
//! that only moves raw bytes from the kernel into a bounded channel (the "pump"). The owning
//! socket thread selects on that channel and its other inputs, feeds the bytes to the WebSocket
//! (whose reads never block: an empty inbox is `WouldBlock`) and writes directly to the socket.
//! The bounded channel is the back-pressure: a peer that floods us stalls in its own kernel
//! buffers, never in our memory.
//!
//! This is the transport seam: [`Transport`] is plain TCP (`ws://`) or rustls over the same
//! pipe (`wss://`, client or server side); everything above it is unchanged. The TLS handshake
//! is done explicitly before the WebSocket one, so the accepting side can decide on the peer's
//! certificate and the dialing side can report a TLS failure as one.

use super::wire::{Frame, SUBPROTOCOL};
use crossbeam_channel::{Receiver, Sender};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Bytes, Message, WebSocket};

/// Bytes moved by the pump thread; `None` = the peer closed or the socket failed.
pub type Chunk = Option<Vec<u8>>;

/// Handshake header naming the node on each side (request: the dialer; answer: the acceptor).
pub const NODE_HEADER: &str = "X-Skerry-Node";

const PUMP_CHUNKS: usize = 64;
const PUMP_READ: usize = 64 * 1024;

/// The socket under the WebSocket: reads come from the pump's inbox once the handshake is done.
pub struct Pipe {
    sock: TcpStream,
    inbox: Vec<u8>,
    pos: usize,
    /// During the handshake reads go straight to the socket.
    direct: bool,
    /// The whole handshake must be done by then: a per-read timeout alone restarts with every
    /// byte, so a peer sending one byte every few seconds would hold the thread forever.
    deadline: Option<Instant>,
}

impl Pipe {
    /// Readies `sock` for a WebSocket handshake: no Nagle delay (frames are small and
    /// latency-bound), and timeouts so a peer that stalls mid-handshake cannot hold the thread.
    fn for_handshake(sock: &TcpStream, cfg: &ConnConfig) -> Result<Pipe, String> {
        sock.set_nodelay(true).ok();
        sock.set_read_timeout(Some(cfg.connect_timeout)).ok();
        sock.set_write_timeout(Some(cfg.connect_timeout)).ok();
        Ok(Pipe {
            sock: sock.try_clone().map_err(|e| e.to_string())?,
            inbox: Vec::new(),
            pos: 0,
            direct: true,
            deadline: Some(Instant::now() + cfg.connect_timeout),
        })
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.direct {
            if let Some(deadline) = self.deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "handshake not completed in time",
                    ));
                }
                self.sock.set_read_timeout(Some(left))?;
            }
            return self.sock.read(buf);
        }
        let avail = &self.inbox[self.pos..];
        if avail.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.pos += n;
        if self.pos == self.inbox.len() {
            self.inbox.clear();
            self.pos = 0;
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// What the WebSocket runs over: the pipe itself, or rustls on top of it.
pub enum Transport {
    Plain(Pipe),
    Client(Box<rustls::StreamOwned<rustls::ClientConnection, Pipe>>),
    Server(Box<rustls::StreamOwned<rustls::ServerConnection, Pipe>>),
}

impl Transport {
    fn pipe(&mut self) -> &mut Pipe {
        match self {
            Transport::Plain(p) => p,
            Transport::Client(s) => &mut s.sock,
            Transport::Server(s) => &mut s.sock,
        }
    }

    /// The leaf certificate the peer presented (TLS only), if any.
    fn peer_leaf(&self) -> Option<Vec<u8>> {
        let certs = match self {
            Transport::Plain(_) => return None,
            Transport::Client(s) => s.conn.peer_certificates(),
            Transport::Server(s) => s.conn.peer_certificates(),
        }?;
        certs.first().map(|c| c.as_ref().to_vec())
    }

    /// Completes the TLS handshake (nothing on plain TCP).
    fn handshake(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Client(s) => {
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock)?;
                }
                Ok(())
            }
            Transport::Server(s) => {
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock)?;
                }
                Ok(())
            }
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(p) => p.read(buf),
            Transport::Client(s) => s.read(buf),
            Transport::Server(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(p) => p.write(buf),
            Transport::Client(s) => s.write(buf),
            Transport::Server(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(p) => p.flush(),
            Transport::Client(s) => s.flush(),
            Transport::Server(s) => s.flush(),
        }
    }
}

/// Limits for one connection.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub max_frame: usize,
    /// Writes that block this long mean the peer stopped reading: the connection is dropped.
    pub write_timeout: Duration,
    pub connect_timeout: Duration,
}

/// Something the peer sent.
#[derive(Debug)]
pub enum Incoming {
    Frame(Frame),
    Closed(String),
}

pub struct Conn {
    ws: WebSocket<Transport>,
    sock: TcpStream,
    pub bytes: Receiver<Chunk>,
    pub peer_addr: SocketAddr,
    /// The node name the accepting peer announced (`X-Skerry-Node` in its handshake answer);
    /// None on accepted sockets and from peers that announce none.
    pub peer_name: Option<String>,
    /// The certificate the peer presented on a TLS connection (verified against the trusted
    /// CAs by rustls: a client certificate when one was sent, always the server's).
    pub peer_cert: Option<crate::tls::info::CertInfo>,
    pub last_rx: Instant,
    pub last_tx: Instant,
    /// Round trip of the last answered ping.
    pub latency: Option<Duration>,
    ping_sent: Option<(u64, Instant)>,
    /// When the last ping went out (None: not yet on this connection).
    last_ping: Option<Instant>,
    ping_seq: u64,
    /// Messages decoded but not yet taken by `recv_frame`.
    pending: std::collections::VecDeque<Incoming>,
}

fn ws_config(max_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
        // Bounded: a peer that stops reading makes our writes block (then time out) instead of
        // growing a buffer.
        .max_write_buffer_size(max_frame.saturating_mul(2).max(1 << 20))
}

fn start_pump(sock: &TcpStream) -> io::Result<Receiver<Chunk>> {
    let mut reader = sock.try_clone()?;
    let (tx, rx): (Sender<Chunk>, Receiver<Chunk>) = crossbeam_channel::bounded(PUMP_CHUNKS);
    std::thread::Builder::new()
        .name("repl-pump".into())
        .spawn(move || {
            let mut buf = vec![0u8; PUMP_READ];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Ok(n) => {
                        if tx.send(Some(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        })?;
    Ok(rx)
}

/// A bound-and-connect for outgoing sockets: replication identity on the insecure port is the
/// source address, so a node that listens on one loopback address (127.0.0.2) must also dial
/// from it, as Harper does.
fn dial(addr: SocketAddr, bind: Option<IpAddr>, timeout: Duration) -> io::Result<TcpStream> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if let Some(ip) = bind.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    s.connect_timeout(&addr.into(), timeout)?;
    Ok(s.into())
}

impl Conn {
    fn finish(
        ws: WebSocket<Transport>,
        sock: TcpStream,
        peer_addr: SocketAddr,
        cfg: &ConnConfig,
    ) -> io::Result<Conn> {
        sock.set_read_timeout(None)?;
        sock.set_write_timeout(Some(cfg.write_timeout))?;
        let bytes = start_pump(&sock)?;
        let mut ws = ws;
        let peer_cert = ws
            .get_ref()
            .peer_leaf()
            .and_then(|der| crate::tls::info::CertInfo::from_der(&der).ok());
        ws.get_mut().pipe().direct = false;
        ws.get_mut().pipe().deadline = None;
        let now = Instant::now();
        Ok(Conn {
            ws,
            sock,
            bytes,
            peer_addr,
            peer_name: None,
            peer_cert,
            last_rx: now,
            last_tx: now,
            latency: None,
            ping_sent: None,
            last_ping: None,
            ping_seq: 0,
            pending: std::collections::VecDeque::new(),
        })
    }

    /// Dials `host:port` (over TLS with `tls`) and performs the WebSocket handshake with our
    /// identity headers.
    pub fn connect(
        host: &str,
        port: u16,
        bind: Option<IpAddr>,
        headers: &[(&str, String)],
        cfg: &ConnConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Conn, String> {
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("cannot resolve {host}"))?;
        let sock =
            dial(addr, bind, cfg.connect_timeout).map_err(|e| format!("connect {addr}: {e}"))?;
        let pipe = Pipe::for_handshake(&sock, cfg)?;
        let mut transport = match tls {
            None => Transport::Plain(pipe),
            Some(config) => {
                let name = crate::tls::server_name(host)?;
                let conn = rustls::ClientConnection::new(config, name)
                    .map_err(|e| format!("TLS with {addr}: {e}"))?;
                Transport::Client(Box::new(rustls::StreamOwned::new(conn, pipe)))
            }
        };
        transport
            .handshake()
            .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
        let host_hdr = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let mut req = tungstenite::ClientRequestBuilder::new(
            format!("ws://{host_hdr}:{port}/")
                .parse()
                .map_err(|e| format!("bad url: {e}"))?,
        )
        .with_sub_protocol(SUBPROTOCOL);
        for (k, v) in headers {
            req = req.with_header(*k, v.clone());
        }
        let (ws, resp) =
            tungstenite::client::client_with_config(req, transport, Some(ws_config(cfg.max_frame)))
                .map_err(|e| match e {
                    tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => {
                        let body = resp
                            .body()
                            .as_ref()
                            .map(|b| String::from_utf8_lossy(b).to_string())
                            .unwrap_or_default();
                        format!("refused by {addr}: {} {body}", resp.status())
                    }
                    other => format!("handshake with {addr}: {other}"),
                })?;
        let mut conn = Conn::finish(ws, sock, addr, cfg).map_err(|e| e.to_string())?;
        conn.peer_name = resp
            .headers()
            .get(NODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(conn)
    }

    /// Accepts a WebSocket on `sock` (over TLS with `tls`); `check` sees the request (headers),
    /// the peer address and the client certificate it presented, and may refuse it with a
    /// status and reason.
    pub fn accept(
        sock: TcpStream,
        cfg: &ConnConfig,
        our_name: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
        check: impl FnOnce(
            &Request,
            SocketAddr,
            Option<&crate::tls::info::CertInfo>,
        ) -> Result<(), (u16, String)>,
    ) -> Result<Conn, String> {
        let peer_addr = sock.peer_addr().map_err(|e| e.to_string())?;
        let pipe = Pipe::for_handshake(&sock, cfg)?;
        let mut transport = match tls {
            None => Transport::Plain(pipe),
            Some(config) => {
                let conn = rustls::ServerConnection::new(config)
                    .map_err(|e| format!("TLS from {peer_addr}: {e}"))?;
                Transport::Server(Box::new(rustls::StreamOwned::new(conn, pipe)))
            }
        };
        transport
            .handshake()
            .map_err(|e| format!("TLS handshake from {peer_addr} failed: {e}"))?;
        let client_cert = transport
            .peer_leaf()
            .and_then(|der| crate::tls::info::CertInfo::from_der(&der).ok());
        // tungstenite fixes the callback's signature, large error type included.
        #[allow(clippy::result_large_err)]
        let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
            if let Err((status, reason)) = check(req, peer_addr, client_cert.as_ref()) {
                let mut r = ErrorResponse::new(Some(reason));
                *r.status_mut() = tungstenite::http::StatusCode::from_u16(status)
                    .unwrap_or(tungstenite::http::StatusCode::FORBIDDEN);
                return Err(r);
            }
            let wants_ours = req
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|p| p.trim() == SUBPROTOCOL));
            if wants_ours {
                if let Ok(v) = SUBPROTOCOL.parse() {
                    resp.headers_mut().insert("Sec-WebSocket-Protocol", v);
                }
            }
            // Our name, so the dialer can check it reached the node it meant to.
            if let Ok(v) = our_name.parse() {
                resp.headers_mut().insert(NODE_HEADER, v);
            }
            Ok(resp)
        };
        let ws = tungstenite::accept_hdr_with_config(
            transport,
            callback,
            Some(ws_config(cfg.max_frame)),
        )
        .map_err(|e| format!("handshake from {peer_addr}: {e}"))?;
        Conn::finish(ws, sock, peer_addr, cfg).map_err(|e| e.to_string())
    }

    /// Feeds bytes from the pump and returns every complete message they finish.
    pub fn feed(&mut self, chunk: Chunk) -> Vec<Incoming> {
        let mut out = Vec::new();
        let Some(bytes) = chunk else {
            out.push(Incoming::Closed("connection closed by peer".into()));
            return out;
        };
        self.last_rx = Instant::now();
        self.ws.get_mut().pipe().inbox.extend_from_slice(&bytes);
        loop {
            match self.ws.read() {
                Ok(Message::Binary(b)) => match Frame::decode(&b) {
                    Ok(f) => out.push(Incoming::Frame(f)),
                    Err(e) => {
                        out.push(Incoming::Closed(format!("protocol error: {e}")));
                        break;
                    }
                },
                Ok(Message::Pong(p)) => {
                    if let (Some((seq, at)), Ok(raw)) =
                        (self.ping_sent, <[u8; 8]>::try_from(p.as_ref()))
                    {
                        if u64::from_be_bytes(raw) == seq {
                            self.latency = Some(at.elapsed());
                            self.ping_sent = None;
                        }
                    }
                }
                Ok(Message::Close(c)) => {
                    out.push(Incoming::Closed(
                        c.map(|c| c.reason.to_string())
                            .unwrap_or_else(|| "closed".into()),
                    ));
                    break;
                }
                // Peers speak binary frames only: a text message is garbage, and ignoring it
                // let a peer hold a socket (and its thread) with messages that mean nothing.
                Ok(Message::Text(_)) => {
                    out.push(Incoming::Closed(
                        "protocol error: text message on a replication socket".into(),
                    ));
                    break;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    out.push(Incoming::Closed(e.to_string()));
                    break;
                }
            }
        }
        // Pongs to the peer's pings were queued by read(); push them out now.
        if let Err(e) = self.ws.flush() {
            if !matches!(&e, tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock) {
                out.push(Incoming::Closed(e.to_string()));
            }
        }
        out
    }

    pub fn send(&mut self, frame: &Frame) -> Result<(), String> {
        self.send_bytes(frame.encode())
    }

    /// Sends an already encoded frame (one WebSocket message) and flushes it.
    pub fn send_bytes(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.ws
            .send(Message::Binary(Bytes::from(bytes)))
            .map_err(|e| format!("send failed: {e}"))?;
        self.last_tx = Instant::now();
        Ok(())
    }

    /// A ping is due: none yet on this connection (so a new link reports its latency at once,
    /// not a ping interval later), or the last one is `interval` old. Deliberately not keyed
    /// on `last_tx`: a link that streams or acknowledges steadily never goes quiet, and then
    /// never measured its latency at all.
    pub fn ping_due(&self, interval: Duration) -> bool {
        self.last_ping.is_none_or(|t| t.elapsed() >= interval)
    }

    /// Sends a ping carrying a sequence number; the pong gives the latency.
    pub fn ping(&mut self) -> Result<(), String> {
        self.ping_seq += 1;
        let now = Instant::now();
        self.ping_sent = Some((self.ping_seq, now));
        self.last_ping = Some(now);
        self.ws
            .send(Message::Ping(Bytes::copy_from_slice(
                &self.ping_seq.to_be_bytes(),
            )))
            .map_err(|e| format!("ping failed: {e}"))?;
        self.last_tx = Instant::now();
        Ok(())
    }

    /// Waits up to `timeout` for the next frame (request/response use on one-shot sockets).
    pub fn recv_frame(&mut self, timeout: Duration) -> Result<Frame, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.pending.pop_front() {
                Some(Incoming::Frame(f)) => return Ok(f),
                Some(Incoming::Closed(reason)) => return Err(reason),
                None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out waiting for the peer".into());
            }
            let chunk = self
                .bytes
                .recv_timeout(left)
                .map_err(|_| "timed out waiting for the peer".to_string())?;
            let incoming = self.feed(chunk);
            self.pending.extend(incoming);
        }
    }

    /// Sends a close frame (best effort) and shuts the socket down, which also ends the pump.
    pub fn close(&mut self, reason: &str) {
        let frame = tungstenite::protocol::CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: reason.to_string().into(),
        };
        let _ = self.ws.close(Some(frame));
        let _ = self.ws.flush();
        let _ = self.sock.shutdown(Shutdown::Both);
    }

    /// A handle that can cut the connection from another thread (stop, supersede).
    pub fn killer(&self) -> io::Result<TcpStream> {
        self.sock.try_clone()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}
