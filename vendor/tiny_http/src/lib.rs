//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use client::ClientConnection;
use connection::Connection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::{ReadWrite, Request};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

mod client;
mod common;
mod connection;
mod request;
mod response;
mod test;
mod util;

/// Most requests of one connection that may wait for their response at the same time
/// (pipelining); the connection reads no further request until one is answered.
const MAX_UNANSWERED: usize = 16;

/// A request handler for `Server::from_listener_with_handler`.
pub type RequestHandler = Arc<dyn Fn(Request) + Send + Sync + 'static>;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // live connections, for `num_connections()` and `ConnectionOptions::max_connections`
    connections: Arc<Connections>,
}

/// Number of live connections (each has a thread), shared by the accept thread and the
/// connection threads.
#[derive(Default)]
struct Connections {
    count: Mutex<usize>,
    ended: Condvar,
    /// Live connections per client IP address (only addresses with at least one).
    per_ip: Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// Live connections of every server in the process (Skerry's metrics read it).
static LIVE_CONNECTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Live connections of every server in this process.
pub fn live_connections() -> usize {
    LIVE_CONNECTIONS.load(Relaxed)
}

impl Connections {
    fn register(self: &Arc<Self>, ip: Option<std::net::IpAddr>) -> ConnectionRegistration {
        LIVE_CONNECTIONS.fetch_add(1, Relaxed);
        *self.count.lock().unwrap() += 1;
        if let Some(ip) = ip {
            *self.per_ip.lock().unwrap().entry(ip).or_insert(0) += 1;
        }
        ConnectionRegistration(Arc::clone(self), ip)
    }

    /// Live connections from `ip`.
    fn from_ip(&self, ip: std::net::IpAddr) -> usize {
        self.per_ip.lock().unwrap().get(&ip).copied().unwrap_or(0)
    }

    /// Blocks while `max` connections are live. Returns false if the server closes meanwhile.
    fn wait_below(&self, max: usize, close: &AtomicBool) -> bool {
        let mut count = self.count.lock().unwrap();
        while *count >= max {
            if close.load(Relaxed) {
                return false;
            }
            // the timeout is there to notice `close`
            let timeout = Duration::from_millis(100);
            count = self.ended.wait_timeout(count, timeout).unwrap().0;
        }
        true
    }
}

/// Counts one connection as live (in total and for its client address) until dropped.
struct ConnectionRegistration(Arc<Connections>, Option<std::net::IpAddr>);

impl Drop for ConnectionRegistration {
    fn drop(&mut self) {
        if let Some(ip) = self.1 {
            let mut per_ip = self.0.per_ip.lock().unwrap();
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        LIVE_CONNECTIONS.fetch_sub(1, Relaxed);
        *self.0.count.lock().unwrap() -= 1;
        self.0.ended.notify_one();
    }
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
#[allow(dead_code)] // a compile-time check that Server is Send + Sync
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// Limits and socket options applied to every accepted connection
/// (see [`Server::from_listener_with`]).
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Time a client has to send a complete request head (request line and headers),
    /// counted from when the server starts waiting for it; this closes idle keep-alive
    /// connections and clients that trickle their headers (slowloris). While a handler
    /// reads a request body, it is the timeout of each read. `None`: wait forever
    /// (upstream behaviour). Default: `None`.
    pub read_timeout: Option<Duration>,

    /// Timeout of each write to the socket: a client that stops reading makes
    /// `Request::respond` fail after this instead of blocking the handler forever.
    /// Default: `None`.
    pub write_timeout: Option<Duration>,

    /// Sets `TCP_NODELAY` on accepted TCP sockets. Default: `true`.
    pub nodelay: bool,

    /// Maximum number of live connections, each of which has its own thread. When it is
    /// reached, the server stops accepting until a connection ends: new clients wait in
    /// the listen backlog (and are refused by the OS once the backlog is full); they are
    /// neither answered with an error nor given a thread. Default: 1024.
    pub max_connections: usize,

    /// Request bodies declaring a `Content-Length` up to this size are read completely on the
    /// connection's own thread, within a fresh `read_timeout` deadline, before the request is
    /// queued; the handler then never waits on the client. Larger (and chunked) bodies are read
    /// by the handler as upstream does. Memory grows only with bytes actually received.
    /// Default: 1024 (upstream's fixed value).
    pub eager_body_limit: usize,

    /// Maximum number of live connections from one client IP address. A connection beyond it
    /// is closed at once (before anything is read), so one host cannot take every slot of
    /// `max_connections` and starve the others. Default: unlimited (`usize::MAX`).
    pub max_connections_per_ip: usize,

    /// Serve HTTPS with this rustls configuration. The handshake runs on the connection's
    /// thread within the head deadline; a TLS connection is served one request at a time
    /// (its session is shared by both halves), which is what the handler mode does anyway.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            read_timeout: None,
            write_timeout: None,
            nodelay: true,
            max_connections: 1024,
            eager_body_limit: 1024,
            max_connections_per_ip: usize::MAX,
            tls: None,
        }
    }
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.ssl)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        // Vendored copy: the `ssl-openssl`/`ssl-rustls` features were removed (see VENDORED.md);
        // `SslConfig` is kept only so that the public signatures stay the same.
        if ssl_config.is_some() {
            return Err("TLS support was removed from this vendored tiny_http".into());
        }
        Self::from_listener_with(listener, ConnectionOptions::default())
    }

    /// Builds a new server using the specified listener (TCP or UNIX), applying `opts` to
    /// every accepted connection.
    pub fn from_listener_with<L: Into<Listener>>(
        listener: L,
        opts: ConnectionOptions,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::build(listener, opts, None)
    }

    /// Like `from_listener_with`, but every request is handed to `handler` on its
    /// connection's own thread instead of being queued for `recv()` (which then never returns
    /// a request). Thread-per-connection: no hand-off between threads per request, at most
    /// `max_connections` threads. The handler must answer the request (`Request::respond`)
    /// before returning; the connection reads its next request afterwards.
    pub fn from_listener_with_handler<L: Into<Listener>>(
        listener: L,
        opts: ConnectionOptions,
        handler: RequestHandler,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::build(listener, opts, Some(handler))
    }

    fn build<L: Into<Listener>>(
        listener: L,
        opts: ConnectionOptions,
        handler: Option<RequestHandler>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        if opts.read_timeout == Some(Duration::ZERO) || opts.write_timeout == Some(Duration::ZERO) {
            return Err("ConnectionOptions: a timeout must be None or longer than zero".into());
        }
        if opts.max_connections == 0 || opts.max_connections_per_ip == 0 {
            return Err("ConnectionOptions: max_connections must be at least 1".into());
        }
        let listener = listener.into();
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };

        // creating a task where server.accept() is continuously called
        // and ClientConnection objects are pushed in the messages queue
        let messages = MessagesQueue::with_capacity(8);

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        let connections = Arc::new(Connections::default());
        let inside_connections = connections.clone();
        thread::spawn(move || {
            // a tasks pool is used to dispatch the connections into threads
            let tasks_pool = util::TaskPool::new();

            log::debug!("Running accept thread");
            let mut accept_errors = 0u64; // in a row
            while !inside_close_trigger.load(Relaxed) {
                // Upstream accepted without limit, one thread per connection. At
                // max_connections, wait here until a connection ends.
                if !inside_connections.wait_below(opts.max_connections, &inside_close_trigger) {
                    break;
                }

                let mut client_ip = None;
                let new_client = match server.accept() {
                    Ok((sock, addr)) => {
                        use util::RefinedTcpStream;
                        client_ip = addr.map(|a| a.ip());
                        if let Some(ip) = client_ip {
                            if inside_connections.from_ip(ip) >= opts.max_connections_per_ip {
                                log::warn!(
                                    "{} already holds {} connections; closing a new one",
                                    ip,
                                    opts.max_connections_per_ip
                                );
                                drop(sock);
                                continue;
                            }
                        }
                        if let Err(e) = sock.configure(&opts) {
                            log::warn!("Cannot set socket options, closing connection: {}", e);
                            continue;
                        }
                        // fails on EMFILE too (upstream: a panic of the accept thread)
                        let stream = match &opts.tls {
                            Some(config) => {
                                util::refined_tcp_stream::Stream::https(sock, config.clone())
                            }
                            None => Ok(sock.into()),
                        };
                        stream.and_then(RefinedTcpStream::new).map(|(read_closable, write_closable)| {
                            ClientConnection::new(
                                write_closable,
                                read_closable,
                                opts.read_timeout,
                                opts.eager_body_limit,
                            )
                        })
                    }
                    Err(e) => Err(e),
                };

                match new_client {
                    Ok(client) => {
                        accept_errors = 0;
                        let messages = inside_messages.clone();
                        let mut client = Some((client, inside_connections.register(client_ip)));
                        let handler = handler.clone();
                        tasks_pool.spawn(Box::new(move || {
                            if let Some(handler) = handler.as_ref() {
                                // Served here, one request at a time: the handler answers
                                // before the next request of the connection is read.
                                if let Some((mut client, _registration)) = client.take() {
                                    while let Some(rq) = client.next() {
                                        handler(rq);
                                    }
                                }
                                return;
                            }
                            if let Some((mut client, _registration)) = client.take() {
                                // Upstream read and queued pipelined requests without limit,
                                // also while none could be answered (a client that does not
                                // read its responses): memory grew with every request sent.
                                // Now the next request is read only while fewer than
                                // MAX_UNANSWERED requests of the connection await a response.
                                let (sender, answered) = mpsc::channel();
                                let mut unanswered = 0;
                                loop {
                                    unanswered -= answered.try_iter().count();
                                    if unanswered >= MAX_UNANSWERED {
                                        // cannot fail: `sender` is alive
                                        answered.recv().unwrap();
                                        unanswered -= 1;
                                        continue;
                                    }
                                    let Some(rq) = client.next() else { break };
                                    messages.push(rq.with_notify_sender(sender.clone()).into());
                                    unanswered += 1;
                                }
                            }
                        }));
                    }

                    Err(e) => {
                        // Upstream passed the error to `recv()` and stopped accepting for good
                        // (EMFILE under a connection flood was enough). Log it and go on; it
                        // is not passed to `recv()`, whose callers often stop at an error.
                        accept_errors += 1;
                        if accept_errors == 1 || accept_errors.is_multiple_of(100) {
                            log::error!("Error accepting new client ({}): {}", accept_errors, e);
                        }
                        // An error about that one connection: accept the next one at once.
                        // Otherwise (out of file descriptors or memory) pause, not to spin.
                        let kind = e.kind();
                        if !matches!(
                            kind,
                            IoErrorKind::ConnectionAborted
                                | IoErrorKind::ConnectionReset
                                | IoErrorKind::Interrupted
                        ) {
                            thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            }
            log::debug!("Terminating accept thread");
        });

        // result
        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
            connections,
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server: connections whose
    /// thread is still reading requests (a connection ends when the client closes it, on
    /// a timeout or error, or after a request that closes it has been read and its body
    /// reader dropped). Upstream: `unimplemented!()`.
    pub fn num_connections(&self) -> usize {
        *self.connections.count.lock().unwrap()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, Relaxed);
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
