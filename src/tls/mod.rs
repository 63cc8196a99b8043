//! Certificates and trust: the node's certificate authority and certificate (created under
//! `rootPath/keys` on first start, or the operator's own from `tls.*`), certificate signing
//! requests and signing them for peers, the rustls configurations built from a trust set, and
//! the details of a certificate (names, serial, validity).
//!
//! Knows nothing of the core's rules or of membership: callers hand it the CA certificates to
//! trust (the members' CAs from `hdb_nodes`) and decide what a verified name may do. Never
//! logs or returns a private key.

pub mod added;
pub mod info;

use info::CertInfo;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Validity of the node CA, of the node's own certificate and of certificates signed for
/// peers. The node certificate is renewed at start once less than `RENEW_BEFORE_DAYS` remain.
const CA_DAYS: i64 = 3650;
const CERT_DAYS: i64 = 365;
const RENEW_BEFORE_DAYS: i64 = 30;

/// The crypto provider of every TLS object here: ring, explicitly (never a process default
/// that a dependency could change).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where the operator's own certificate is (`tls.*`), and whether public roots are trusted.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub certificate_authority: Option<PathBuf>,
    pub enable_root_cas: bool,
}

/// This node's TLS identity.
pub struct NodeTls {
    dir: PathBuf,
    node_name: String,
    /// The CA this node signs peers' requests with (always its own, generated).
    ca_cert_pem: String,
    ca_key: KeyPair,
    /// The certificate chain this node presents, and its key.
    chain: Vec<CertificateDer<'static>>,
    key_pem: String,
    /// PEM of the CA(s) peers should trust for this node's certificate (given in `hdb_nodes`).
    trust_pem: String,
    /// CAs trusted besides the members' (the configured one).
    extra_trust: Vec<CertificateDer<'static>>,
    enable_root_cas: bool,
    /// Certificates the operator added (`add_certificate`).
    added: added::AddedStore,
    /// What the HTTPS port presents, once it is serving.
    https: std::sync::OnceLock<Arc<added::HttpsIdentity>>,
    /// Whether the certificate is the node's own (generated here) rather than `tls.*`'s.
    generated: bool,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Syncs a directory, so the entries created, renamed or removed in it survive a power cut
/// (a file's own fsync does not make its name durable).
fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(&format!("cannot sync {}", dir.display()), e))
}

/// Creates `dir` (owner-only by the process umask) with its entry durable in its parent: after
/// a power cut the node must come back with the same TLS identity, or every peer that trusts
/// its CA refuses it (tests/powerloss.rs).
fn create_dir_durable(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| err(&format!("cannot create {}", dir.display()), e))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

fn write_private(path: &Path, data: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err(&format!("cannot write {}", tmp.display()), e))?;
    f.write_all(data.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| err(&format!("cannot write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(&format!("cannot write {}", path.display()), e))?;
    // The rename is durable only once the folder is synced.
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| err(&format!("cannot read {}", path.display()), e))
}

/// Subject alternative names for a node name: an IP address or a DNS name.
fn san(name: &str) -> Result<SanType, String> {
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => name
            .to_string()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|e| err(&format!("'{name}' cannot be a certificate name"), e)),
    }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // A minute of slack for peers whose clocks are a little behind.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(days);
}

/// Parses every certificate of a PEM text.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| err("invalid PEM certificate", e))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM text".into());
    }
    Ok(certs)
}

pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

impl NodeTls {
    /// Loads the node's CA and certificate from `<root>/keys`, creating them on first start
    /// (and renewing the node certificate when it nears its end or names another node), or
    /// loads the operator's own certificate from `settings`.
    pub fn load_or_create(
        root: &Path,
        node_name: &str,
        settings: &TlsSettings,
    ) -> Result<NodeTls, String> {
        let dir = root.join("keys");
        create_dir_durable(&dir)?;
        let (ca_cert_pem, ca_key) = Self::own_ca(&dir, node_name)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key)
            .map_err(|e| err("the node CA is unreadable", e))?;
        let extra_trust = match &settings.certificate_authority {
            Some(p) => certs_from_pem(&read(p)?)
                .map_err(|e| err(&format!("tls.certificateAuthority ({})", p.display()), e))?,
            None => Vec::new(),
        };
        let generated = settings.certificate.is_none() || settings.private_key.is_none();
        let (chain, key_pem, trust_pem) = match (&settings.certificate, &settings.private_key) {
            (Some(c), Some(k)) => {
                let chain = certs_from_pem(&read(c)?)
                    .map_err(|e| err(&format!("tls.certificate ({})", c.display()), e))?;
                let key_pem = read(k)?;
                PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                    .map_err(|e| err(&format!("tls.privateKey ({})", k.display()), e))?;
                let trust = match &settings.certificate_authority {
                    Some(p) => read(p)?,
                    None => String::new(),
                };
                (chain, key_pem, trust)
            }
            _ => {
                let (cert_pem, key_pem) = Self::own_cert(&dir, node_name, &issuer)?;
                (certs_from_pem(&cert_pem)?, key_pem, ca_cert_pem.clone())
            }
        };
        Ok(NodeTls {
            node_name: node_name.to_string(),
            ca_cert_pem,
            ca_key,
            chain,
            key_pem,
            trust_pem,
            extra_trust,
            enable_root_cas: settings.enable_root_cas,
            added: added::AddedStore::new(dir.join("added")),
            https: std::sync::OnceLock::new(),
            generated,
            dir,
        })
    }

    fn own_ca(dir: &Path, node_name: &str) -> Result<(String, KeyPair), String> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert_path.exists() && key_path.exists() {
            let key = KeyPair::from_pem(&read(&key_path)?)
                .map_err(|e| err("keys/ca.key is unreadable", e))?;
            return Ok((read(&cert_path)?, key));
        }
        let key = KeyPair::generate().map_err(|e| err("cannot generate a key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("Skerry-Certificate-Authority-{node_name}"),
        );
        dn.push(DnType::OrganizationName, "Skerry");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_DAYS);
        let cert = params
            .self_signed(&key)
            .map_err(|e| err("cannot create the node CA", e))?;
        write_private(&key_path, &key.serialize_pem())?;
        write_private(&cert_path, &cert.pem())?;
        log::info!(
            "created this node's certificate authority in {}",
            dir.display()
        );
        Ok((cert.pem(), key))
    }

    fn leaf_params(names: &[String], days: i64) -> Result<CertificateParams, String> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        // A random serial: rcgen would derive it from the public key, and a certificate a peer
        // signs for this node's key would then share its serial with this node's own one
        // (revoking one would revoke both).
        let mut serial = [0u8; 16];
        crate::util::random_bytes(&mut serial);
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        validity(&mut params, days);
        Ok(params)
    }

    fn own_cert(
        dir: &Path,
        node_name: &str,
        issuer: &Issuer<'_, &KeyPair>,
    ) -> Result<(String, String), String> {
        let (cert_path, key_path) = (dir.join("node.pem"), dir.join("node.key"));
        if cert_path.exists() && key_path.exists() {
            let pem = read(&cert_path)?;
            let fresh = certs_from_pem(&pem)
                .ok()
                .and_then(|c| CertInfo::from_der(&c[0]).ok())
                .is_some_and(|i| {
                    i.names.iter().any(|n| n == node_name)
                        && i.days_left(crate::util::time::now_ms()) > RENEW_BEFORE_DAYS
                });
            if fresh {
                return Ok((pem, read(&key_path)?));
            }
            log::info!("renewing this node's certificate (expiring, or for another name)");
        }
        let key = KeyPair::generate().map_err(|e| err("cannot generate a key", e))?;
        let params = Self::leaf_params(&[node_name.to_string()], CERT_DAYS)?;
        let cert = params
            .signed_by(&key, issuer)
            .map_err(|e| err("cannot sign this node's certificate", e))?;
        write_private(&key_path, &key.serialize_pem())?;
        write_private(&cert_path, &cert.pem())?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// PEM of the CA(s) that peers must trust to accept this node's certificate.
    pub fn trust_pem(&self) -> &str {
        &self.trust_pem
    }

    /// PEM of the CA that signs peers' requests.
    pub fn ca_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// Details of the certificate this node presents.
    pub fn cert_info(&self) -> Option<CertInfo> {
        self.chain.first().and_then(|c| CertInfo::from_der(c).ok())
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, String> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| err("node key", e))
    }

    /// A certificate signing request for this node's name, with this node's key.
    pub fn csr(&self) -> Result<String, String> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| err("node key", e))?;
        // A request carries only the subject and names; the signer decides the rest.
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.node_name.clone());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![san(&self.node_name)?];
        params
            .serialize_request(&key)
            .and_then(|r| r.pem())
            .map_err(|e| err("cannot build a certificate signing request", e))
    }

    /// Signs a peer's request with this node's CA, after checking that it asks for exactly
    /// the requesting node's name (`for_name`) and nothing else. Returns the certificate PEM.
    pub fn sign_csr(&self, csr_pem: &str, for_name: &str) -> Result<String, String> {
        let req = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("the certificate signing request is invalid: {e}"))?;
        let mut names: Vec<String> = req
            .params
            .subject_alt_names
            .iter()
            .map(|s| match s {
                SanType::DnsName(d) => d.as_str().to_string(),
                SanType::IpAddress(ip) => ip.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        if let Some(cn) = req.params.distinguished_name.get(&DnType::CommonName) {
            names.push(match cn {
                rcgen::DnValue::Utf8String(s) => s.clone(),
                rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
                rcgen::DnValue::Ia5String(s) => s.as_str().to_string(),
                other => format!("{other:?}"),
            });
        }
        if names.is_empty() || names.iter().any(|n| n != for_name) {
            return Err(format!(
                "the certificate signing request names {names:?}, not the requesting node '{for_name}'"
            ));
        }
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key)
            .map_err(|e| err("the node CA is unreadable", e))?;
        let params = Self::leaf_params(&[for_name.to_string()], CERT_DAYS)?;
        let cert = params
            .signed_by(&req.public_key, &issuer)
            .map_err(|e| err("cannot sign the request", e))?;
        Ok(cert.pem())
    }

    /// Stores a certificate a peer's CA signed for this node (used when dialling that peer).
    pub fn store_peer_signed(&self, peer: &str, cert_pem: &str) -> Result<(), String> {
        certs_from_pem(cert_pem)?;
        let dir = self.dir.join("peers");
        create_dir_durable(&dir)?;
        write_private(&dir.join(format!("{}.pem", file_name(peer))), cert_pem)
    }

    /// The certificate chain to present to `peer`: the one its CA signed, if any and still
    /// valid, else this node's own.
    fn chain_for(&self, peer: Option<&str>) -> Vec<CertificateDer<'static>> {
        let signed = peer.and_then(|p| {
            let pem = std::fs::read_to_string(
                self.dir.join("peers").join(format!("{}.pem", file_name(p))),
            )
            .ok()?;
            let certs = certs_from_pem(&pem).ok()?;
            let info = CertInfo::from_der(certs.first()?).ok()?;
            (info.days_left(crate::util::time::now_ms()) > 0).then_some(certs)
        });
        signed.unwrap_or_else(|| self.chain.clone())
    }

    /// The root store for peers: the given CA certificates, the configured one, this node's
    /// own CA, and (with `enableRootCAs`) the public roots.
    pub fn roots(&self, member_cas: &[CertificateDer<'static>]) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for c in certs_from_pem(&self.ca_cert_pem).unwrap_or_default() {
            let _ = roots.add(c);
        }
        for c in certs_from_pem(&self.trust_pem).unwrap_or_default() {
            let _ = roots.add(c);
        }
        for c in self.extra_trust.iter().chain(member_cas) {
            let _ = roots.add(c.clone());
        }
        if self.enable_root_cas {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        roots
    }

    /// The server side of the TLS ports: this node's certificate; client certificates are
    /// optional (the `add_node` bootstrap comes without one) and, when given, must chain to a
    /// trusted CA.
    pub fn server_config(
        &self,
        member_cas: &[CertificateDer<'static>],
    ) -> Result<Arc<ServerConfig>, String> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots(member_cas)),
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| err("client verifier", e))?;
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err("TLS versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key()?)
            .map_err(|e| err("this node's certificate", e))?;
        Ok(Arc::new(cfg))
    }

    /// HTTPS for the operations API: `own` (`operationsApi.tls`'s certificate and key) or this
    /// node's certificate, replaced by an added `"https"` certificate while there is a valid
    /// one; no client certificates.
    pub fn https_config(&self, own: Option<(&Path, &Path)>) -> Result<Arc<ServerConfig>, String> {
        let default = match own {
            Some((cert, key)) => {
                let chain = certs_from_pem(&read(cert)?).map_err(|e| {
                    err(
                        &format!("operationsApi.tls.certificate ({})", cert.display()),
                        e,
                    )
                })?;
                let key = PrivateKeyDer::from_pem_slice(read(key)?.as_bytes()).map_err(|e| {
                    err(
                        &format!("operationsApi.tls.privateKey ({})", key.display()),
                        e,
                    )
                })?;
                rustls::sign::CertifiedKey::from_der(chain, key, &provider())
                    .map_err(|e| err("operationsApi.tls", e))?
            }
            None => {
                rustls::sign::CertifiedKey::from_der(self.chain.clone(), self.key()?, &provider())
                    .map_err(|e| err("this node's certificate", e))?
            }
        };
        let identity = Arc::new(added::HttpsIdentity::new(Arc::new(default)));
        identity.refresh(&self.added, crate::util::time::now_ms());
        let identity = self.https.get_or_init(|| identity).clone();
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err("TLS versions", e))?
            .with_no_client_auth()
            .with_cert_resolver(identity);
        Ok(Arc::new(cfg))
    }

    /// The operator's added certificates.
    pub fn added(&self) -> &added::AddedStore {
        &self.added
    }

    /// Re-reads which certificate HTTPS presents (after an add or remove).
    pub fn refresh_https(&self) {
        if let Some(h) = self.https.get() {
            h.refresh(&self.added, crate::util::time::now_ms());
        }
    }

    /// The certificates this node holds, as Harper's `list_certificates` shows them: its
    /// own certificate and CA, certificates peers' CAs signed for it, the configured CA, and
    /// the added ones. Private keys are named, never shown.
    pub fn list_certificates(&self, now_ms: u64) -> Vec<serde_json::Value> {
        use serde_json::json;
        let entry = |name: &str,
                     chain: &[CertificateDer<'_>],
                     key: Option<&str>,
                     authority: bool,
                     uses: Vec<&str>,
                     self_signed: bool,
                     origin: &str| {
            let details = chain
                .first()
                .and_then(|c| CertInfo::from_der(c).ok())
                .map(|i| i.harper_details(now_ms))
                .unwrap_or(serde_json::Value::Null);
            json!({
                "name": name,
                "certificate": chain.iter().map(|c| der_to_pem(c)).collect::<String>(),
                "private_key_name": key,
                "is_authority": authority,
                "details": details,
                "is_self_signed": self_signed,
                "uses": uses,
                "origin": origin,
            })
        };
        let mut out = Vec::new();
        let https_default = self.https.get().is_some_and(|h| h.serves_default());
        let mut uses = vec!["replication"];
        if https_default {
            uses.push("https");
        }
        out.push(entry(
            &self.node_name,
            &self.chain,
            Some(if self.generated {
                "node.key"
            } else {
                "tls.privateKey"
            }),
            false,
            uses,
            self.generated,
            if self.generated {
                "generated"
            } else {
                "config"
            },
        ));
        if let Ok(ca) = certs_from_pem(&self.ca_cert_pem) {
            let name = ca
                .first()
                .and_then(|c| CertInfo::from_der(c).ok())
                .and_then(|i| i.names.first().cloned())
                .unwrap_or_else(|| format!("Skerry-Certificate-Authority-{}", self.node_name));
            out.push(entry(
                &name,
                &ca,
                Some("ca.key"),
                true,
                vec![],
                true,
                "generated",
            ));
        }
        for c in &self.extra_trust {
            let name = CertInfo::from_der(c)
                .ok()
                .and_then(|i| i.names.first().cloned())
                .unwrap_or_default();
            out.push(entry(
                &name,
                std::slice::from_ref(c),
                None,
                true,
                vec!["replication"],
                false,
                "config",
            ));
        }
        if let Ok(d) = std::fs::read_dir(self.dir.join("peers")) {
            let mut peers: Vec<(String, Vec<CertificateDer<'static>>)> = d
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let path = e.path();
                    let peer = path.file_stem()?.to_str()?.to_string();
                    let certs = certs_from_pem(&std::fs::read_to_string(&path).ok()?).ok()?;
                    Some((peer, certs))
                })
                .collect();
            peers.sort_by(|a, b| a.0.cmp(&b.0));
            for (peer, certs) in peers {
                out.push(entry(
                    &format!("{}-replication@{peer}", self.node_name),
                    &certs,
                    Some("node.key"),
                    false,
                    vec!["replication"],
                    false,
                    "signed by peer",
                ));
            }
        }
        for a in self.added.list() {
            let chain = certs_from_pem(&a.certificate).unwrap_or_default();
            let mut e = entry(
                &a.name,
                &chain,
                a.private_key_name.as_deref(),
                a.is_authority,
                a.uses.iter().map(String::as_str).collect(),
                chain
                    .first()
                    .and_then(|c| CertInfo::from_der(c).ok())
                    .is_some_and(|i| i.subject == i.issuer),
                "added",
            );
            e["certificate"] = json!(a.certificate);
            e["__updatedtime__"] = json!(a.updated_ms);
            out.push(e);
        }
        out
    }

    /// Whether `name` is one of the certificates this node holds by itself (not added).
    pub fn is_builtin(&self, name: &str, now_ms: u64) -> bool {
        self.list_certificates(now_ms)
            .iter()
            .any(|e| e["name"] == name && e["origin"] != "added")
    }

    /// The client side: dialling `peer` with this node's certificate (the one the peer's CA
    /// signed, when there is one), verifying the peer's chain against `member_cas` (and the
    /// rest of [`NodeTls::roots`]) unless `verify` is false (an `add_node` with
    /// `verify_tls: false` to a fresh, self-signed peer). `client_auth: false` sends no
    /// certificate (the credentials bootstrap).
    pub fn client_config(
        &self,
        peer: Option<&str>,
        member_cas: &[CertificateDer<'static>],
        verify: bool,
        client_auth: bool,
    ) -> Result<Arc<ClientConfig>, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err("TLS versions", e))?;
        let builder = if verify {
            builder.with_root_certificates(self.roots(member_cas))
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification))
        };
        let cfg = if client_auth {
            builder
                .with_client_auth_cert(self.chain_for(peer), self.key()?)
                .map_err(|e| err("this node's certificate", e))?
        } else {
            builder.with_no_client_auth()
        };
        Ok(Arc::new(cfg))
    }
}

/// A file name for a peer name (names are DNS names or IP literals; anything else is hexed).
fn file_name(peer: &str) -> String {
    if peer
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !peer.starts_with('.')
    {
        peer.to_string()
    } else {
        crate::util::hex(peer.as_bytes())
    }
}

/// The server name to verify a peer's certificate against.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| err(&format!("'{host}'"), e))
}

/// Accepts any server certificate: only for an `add_node` with `verify_tls: false`, whose
/// credentials then authenticate this node to the peer and whose answer carries the CA that
/// every later connection is verified against.
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
