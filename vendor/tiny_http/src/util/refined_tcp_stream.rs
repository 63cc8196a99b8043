use std::io::Result as IoResult;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connection::Connection;

/// A TLS connection shared by the read and write halves of a connection (a rustls session
/// cannot be split). The raw socket beside it carries timeouts, the peer address and shutdown.
pub(crate) type TlsSession = Arc<Mutex<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>>;

pub(crate) enum Stream {
    Http(Connection),
    Https(TlsSession, TcpStream),
}

impl Stream {
    // upstream: `impl Clone` with `try_clone().unwrap()`, which panicked on EMFILE
    fn try_clone(&self) -> IoResult<Self> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.try_clone().map(Stream::Http),
            Stream::Https(tls, raw) => Ok(Stream::Https(Arc::clone(tls), raw.try_clone()?)),
        }
    }

    /// Wraps an accepted TCP connection in a server-side TLS session. The handshake happens
    /// on the first read, under the same head deadline as a request head.
    pub(crate) fn https(conn: Connection, config: Arc<rustls::ServerConfig>) -> IoResult<Self> {
        let Connection::Tcp(tcp) = conn else {
            return Err(std::io::Error::other("TLS needs a TCP connection"));
        };
        let raw = tcp.try_clone()?;
        let session = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
        Ok(Stream::Https(
            Arc::new(Mutex::new(rustls::StreamOwned::new(session, tcp))),
            raw,
        ))
    }
}

impl From<Connection> for Stream {
    fn from(tcp_stream: Connection) -> Self {
        Stream::Http(tcp_stream)
    }
}

impl Stream {
    fn secure(&self) -> bool {
        match self {
            Stream::Http(_) => false,
            Stream::Https(..) => true,
        }
    }

    fn peer_addr(&mut self) -> IoResult<Option<SocketAddr>> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.peer_addr(),
            Stream::Https(_, raw) => raw.peer_addr().map(Some),
        }
    }

    fn shutdown(&mut self, how: Shutdown) -> IoResult<()> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.shutdown(how),
            Stream::Https(tls, raw) => {
                if how != Shutdown::Read {
                    if let Ok(mut s) = tls.lock() {
                        s.conn.send_close_notify();
                        let _ = s.flush();
                    }
                }
                raw.shutdown(how)
            }
        }
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> IoResult<()> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.set_read_timeout(timeout),
            Stream::Https(_, raw) => raw.set_read_timeout(timeout),
        }
    }
}

fn locked<T>(
    tls: &TlsSession,
    f: impl FnOnce(&mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>) -> IoResult<T>,
) -> IoResult<T> {
    let mut s = tls
        .lock()
        .map_err(|_| std::io::Error::other("TLS session poisoned"))?;
    f(&mut s)
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.read(buf),
            Stream::Https(tls, _) => locked(tls, |s| s.read(buf)),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.write(buf),
            Stream::Https(tls, _) => locked(tls, |s| s.write(buf)),
        }
    }

    fn flush(&mut self) -> IoResult<()> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.flush(),
            Stream::Https(tls, _) => locked(tls, |s| s.flush()),
        }
    }
}

pub struct RefinedTcpStream {
    stream: Stream,
    close_read: bool,
    close_write: bool,
    // while a request head is being read: when it must be complete, and the socket's
    // normal read timeout to restore afterwards
    head_deadline: Option<(Instant, Duration)>,
}

impl RefinedTcpStream {
    pub(crate) fn new<S>(stream: S) -> IoResult<(RefinedTcpStream, RefinedTcpStream)>
    where
        S: Into<Stream>,
    {
        let stream: Stream = stream.into();

        let (read, write) = (stream.try_clone()?, stream);

        let read = RefinedTcpStream {
            stream: read,
            close_read: true,
            close_write: false,
            head_deadline: None,
        };

        let write = RefinedTcpStream {
            stream: write,
            close_read: false,
            close_write: true,
            head_deadline: None,
        };

        Ok((read, write))
    }

    /// Returns true if this struct wraps around a secure connection.
    #[inline]
    pub(crate) fn secure(&self) -> bool {
        self.stream.secure()
    }

    pub(crate) fn peer_addr(&mut self) -> IoResult<Option<SocketAddr>> {
        self.stream.peer_addr()
    }

    /// From now on, reads fail with `TimedOut` once `timeout` has passed, however the
    /// client paces its bytes. A read timeout alone restarts with every byte received, so
    /// a client trickling its headers (slowloris) held a connection thread forever.
    pub(crate) fn start_head_deadline(&mut self, timeout: Duration) {
        self.head_deadline = Some((Instant::now() + timeout, timeout));
    }

    /// Ends the deadline set by `start_head_deadline` and restores the read timeout.
    pub(crate) fn end_head_deadline(&mut self) -> IoResult<()> {
        match self.head_deadline.take() {
            Some((_, timeout)) => self.stream.set_read_timeout(Some(timeout)),
            None => Ok(()),
        }
    }
}

impl Drop for RefinedTcpStream {
    fn drop(&mut self) {
        if self.close_read {
            self.stream.shutdown(Shutdown::Read).ok();
        }

        if self.close_write {
            self.stream.shutdown(Shutdown::Write).ok();
        }
    }
}

impl Read for RefinedTcpStream {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if let Some((deadline, _)) = self.head_deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let msg = "request head not received in time";
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, msg));
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        self.stream.read(buf)
    }
}

impl Write for RefinedTcpStream {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        self.stream.flush()
    }
}
