//! TLS clients for the refusal tests: certificates minted on the spot (by a node's own CA,
//! read from its `rootPath/keys`, or by a foreign one) and a `wss://` handshake with them.

#![allow(dead_code)]

use super::TestNode;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

pub type Wss = tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

/// A node's CA certificate and key (PEM), as it keeps them under `rootPath/keys`.
pub fn node_ca(n: &TestNode) -> (String, String) {
    let dir = n.data_dir().join("data/keys");
    (
        std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        std::fs::read_to_string(dir.join("ca.key")).unwrap(),
    )
}

/// A CA of nobody's.
pub fn foreign_ca() -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Foreign CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// A certificate for `name`, valid from `from_days` to `to_days` (relative to now), signed by
/// the CA `(ca_pem, ca_key_pem)`. Returns (certificate PEM, key PEM, serial hex).
pub fn mint(ca: &(String, String), name: &str, from_days: i64, to_days: i64) -> (String, String) {
    let ca_key = KeyPair::from_pem(&ca.1).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca.0, &ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.subject_alt_names = vec![match name.parse() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.to_string().try_into().unwrap()),
    }];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(from_days);
    p.not_after = now + time::Duration::days(to_days);
    (
        p.signed_by(&key, &issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

/// A `wss://` handshake with `ip:port`, trusting `trust_ca_pem`, presenting `client` (if any),
/// with these headers. Err carries the TLS or HTTP failure.
pub fn wss(
    ip: &str,
    port: u16,
    trust_ca_pem: &str,
    client: Option<&(String, String)>,
    headers: &[(&str, String)],
) -> Result<Wss, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(trust_ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    let sock = TcpStream::connect(format!("{ip}:{port}")).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from(ip.to_string()).unwrap())
            .unwrap();
    let mut stream = rustls::StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("TLS: {e}"))?;
    }
    let mut req =
        tungstenite::ClientRequestBuilder::new(format!("ws://{ip}:{port}/").parse().unwrap())
            .with_sub_protocol(skerry::repl::wire::SUBPROTOCOL);
    for (k, v) in headers {
        req = req.with_header(*k, v.clone());
    }
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            Err(format!("HTTP {}", resp.status().as_u16()))
        }
        Err(e) => Err(format!("handshake: {e}")),
    }
}
