//! The fault-injecting test proxy (tests/common/proxy.rs) against a small echo server.

mod common;
use common::proxy::Proxy;
use common::*;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// An echo server on `addr` that first sends the client's source IP as a line.
fn echo_server(addr: &str) {
    let l = TcpListener::bind(addr).expect("echo bind");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let ip = s.peer_addr().unwrap().ip();
                let _ = s.write_all(format!("{ip}\n").as_bytes());
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}

/// Connects to `to` from source address `from` (port chosen by the system).
fn try_connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let src: SocketAddr = format!("{from}:0").parse().unwrap();
    s.bind(&src.into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    try_connect_from(from, to).unwrap()
}

fn read_line(s: &TcpStream) -> std::io::Result<String> {
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// True when the peer closed or reset the socket (EOF or an error other than a timeout).
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

#[test]
fn proxy_forwards_with_the_client_source_ip_and_blocks_cuts_and_blackholes() {
    let ip = ips(31, 5);
    let (proxy_ip, server_ip, client_a, client_b) = (&ip[0], &ip[1], &ip[2], &ip[3]);
    echo_server(&format!("{server_ip}:9933"));
    let proxy = Proxy::start(&format!("{proxy_ip}:9933"), &format!("{server_ip}:9933"));

    // Forwarding keeps the client's source address.
    let mut a = connect_from(client_a, proxy.listen);
    assert_eq!(read_line(&a).unwrap(), *client_a);
    echo_roundtrip(&mut a, b"hello through the proxy");
    let big = vec![7u8; 300_000];
    echo_roundtrip(&mut a, &big);

    // block: new connections from that IP are closed at once; others still pass.
    proxy.block(client_b);
    // The reset can even beat the end of connect (EPIPE / ECONNRESET from connect itself).
    let refused = match try_connect_from(client_b, proxy.listen) {
        Ok(mut b) => closed(&mut b),
        Err(_) => true,
    };
    assert!(refused, "a blocked client must be disconnected");
    assert_eq!(proxy.refused(), 1);
    echo_roundtrip(&mut a, b"still fine");
    proxy.unblock(client_b);
    let mut b = connect_from(client_b, proxy.listen);
    assert_eq!(read_line(&b).unwrap(), *client_b);
    echo_roundtrip(&mut b, b"unblocked");

    // blackhole: nothing moves on existing or new connections, sockets stay open.
    proxy.blackhole(true);
    a.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    a.write_all(b"held").unwrap();
    let mut buf = [0u8; 4];
    let r = a.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "blackholed link must neither deliver nor close: {r:?}"
    );
    let mut c = connect_from(client_a, proxy.listen);
    c.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let r = c.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a new connection must be wedged too: {r:?}"
    );
    proxy.blackhole(false);
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"held", "held bytes arrive once the link returns");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(read_line(&c).unwrap(), *client_a);

    // cut: every current connection is reset.
    assert_eq!(proxy.live(), 3);
    proxy.cut();
    assert!(closed(&mut a));
    assert!(closed(&mut b));
    assert!(wait_until(Duration::from_secs(5), || proxy.live() == 0));
    let mut d = connect_from(client_a, proxy.listen);
    assert_eq!(read_line(&d).unwrap(), *client_a);
    echo_roundtrip(&mut d, b"after the cut");

    // stop: the listener goes away and connections close.
    drop(proxy);
    assert!(closed(&mut d));
    assert!(TcpStream::connect_timeout(
        &format!("{proxy_ip}:9933").parse().unwrap(),
        Duration::from_secs(1)
    )
    .is_err());
}
