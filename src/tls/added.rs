//! Certificates the operator adds with `add_certificate` (Harper's `hdb_certificate`): kept
//! node-local as owner-only files under `rootPath/keys/added` (one `<name>.json` with the
//! certificate and its use, one `<name>.key` when a private key came with it), never
//! replicated, and a private key is never read back out except into rustls.
//!
//! What an added certificate does: an authority (`is_authority: true`) is trusted by the
//! replication port (a peer's chain may end in it; the peer still needs an `hdb_nodes` row for
//! its name); a certificate with a private key whose `uses` include `"https"` serves the
//! operations API's HTTPS port, the newest valid one winning, without a restart.

use super::info::CertInfo;
use super::{
    certs_from_pem, create_dir_durable, err, file_name, provider, read, sync_dir, write_private,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// At most this many added certificates (each is a file; a list is answered from all).
pub const MAX_ADDED: usize = 1000;
/// At most this many certificates in one `certificate` PEM (a leaf and its intermediates).
pub const MAX_CHAIN: usize = 10;

/// One added certificate as stored (the key, if any, is in its own file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Added {
    pub name: String,
    pub certificate: String,
    pub is_authority: bool,
    pub uses: Vec<String>,
    /// File name of the private key under `keys/added`, when one was given.
    pub private_key_name: Option<String>,
    pub updated_ms: f64,
}

/// A validated `add_certificate` request.
pub struct NewCert {
    pub name: String,
    pub certificate: String,
    pub private_key: Option<String>,
    pub is_authority: bool,
    pub uses: Vec<String>,
}

/// The folder of added certificates; one writer at a time.
pub struct AddedStore {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl AddedStore {
    pub fn new(dir: PathBuf) -> AddedStore {
        AddedStore {
            dir,
            lock: Mutex::new(()),
        }
    }

    /// Every added certificate, by name. An unreadable file is skipped with a warning (a
    /// listing must not fail because one file was damaged by hand).
    pub fn list(&self) -> Vec<Added> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<Added> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| {
                match read(&p)
                    .and_then(|t| serde_json::from_str::<Added>(&t).map_err(|e| e.to_string()))
                {
                    Ok(a) => Some(a),
                    Err(e) => {
                        log::warn!("skipping the added certificate {}: {e}", p.display());
                        None
                    }
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Checks and stores a certificate (replacing one of the same name, as Harper does).
    pub fn add(&self, new: NewCert, now_ms: f64) -> Result<(), String> {
        let chain = certs_from_pem(&new.certificate)
            .map_err(|e| format!("'certificate' is not a PEM certificate ({e})"))?;
        if chain.len() > MAX_CHAIN {
            return Err(format!(
                "'certificate' holds {} certificates; at most {MAX_CHAIN} are accepted",
                chain.len()
            ));
        }
        let mut infos = Vec::new();
        for c in &chain {
            infos.push(CertInfo::from_der(c).map_err(|e| format!("'certificate': {e}"))?);
        }
        if new.is_authority && !infos[0].is_ca {
            return Err("'is_authority' is true but the certificate is not a certificate authority (its basic constraints say CA:FALSE)".into());
        }
        let key = match &new.private_key {
            Some(pem) => {
                let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
                    .map_err(|_| "'private_key' is not a PEM private key".to_string())?;
                CertifiedKey::from_der(chain.clone(), key, &provider()).map_err(|e| {
                    format!("'private_key' does not belong to the certificate ({e})")
                })?;
                Some(pem)
            }
            None => None,
        };
        if new.uses.iter().any(|u| u == "https") && key.is_none() {
            return Err("a certificate used for 'https' needs its 'private_key'".into());
        }
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        create_dir_durable(&self.dir)?;
        let base = file_name(&new.name);
        let (json_path, key_path) = (
            self.dir.join(format!("{base}.json")),
            self.dir.join(format!("{base}.key")),
        );
        if !json_path.exists() && self.count() >= MAX_ADDED {
            return Err(format!(
                "this node already holds {MAX_ADDED} added certificates; remove some first"
            ));
        }
        match key {
            Some(pem) => write_private(&key_path, pem)?,
            None => {
                let _ = std::fs::remove_file(&key_path);
            }
        }
        let added = Added {
            name: new.name,
            certificate: new.certificate,
            is_authority: new.is_authority,
            uses: new.uses,
            private_key_name: new.private_key.as_ref().map(|_| format!("{base}.key")),
            updated_ms: now_ms,
        };
        let text = serde_json::to_string(&added).map_err(|e| e.to_string())?;
        write_private(&json_path, &text)
    }

    /// Removes a certificate and its key; false when there is none of that name.
    pub fn remove(&self, name: &str) -> Result<bool, String> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let base = file_name(name);
        let json_path = self.dir.join(format!("{base}.json"));
        if !json_path.exists() {
            return Ok(false);
        }
        let _ = std::fs::remove_file(self.dir.join(format!("{base}.key")));
        std::fs::remove_file(&json_path)
            .map_err(|e| err(&format!("cannot remove {}", json_path.display()), e))?;
        // Acknowledged removals stay removed across a power cut.
        sync_dir(&self.dir)?;
        Ok(true)
    }

    fn count(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// The authorities the replication port trusts besides the members' CAs.
    pub fn authorities(&self) -> Vec<CertificateDer<'static>> {
        self.list()
            .into_iter()
            .filter(|a| a.is_authority)
            .filter_map(|a| certs_from_pem(&a.certificate).ok())
            .filter_map(|c| c.into_iter().next())
            .collect()
    }

    /// The newest added certificate for HTTPS that is valid now, with its key.
    pub fn https_identity(&self, now_ms: u64) -> Option<Arc<CertifiedKey>> {
        let mut candidates: Vec<Added> = self
            .list()
            .into_iter()
            .filter(|a| a.uses.iter().any(|u| u == "https") && a.private_key_name.is_some())
            .collect();
        candidates.sort_by(|a, b| b.updated_ms.total_cmp(&a.updated_ms));
        candidates.into_iter().find_map(|a| {
            let chain = certs_from_pem(&a.certificate).ok()?;
            let info = CertInfo::from_der(chain.first()?).ok()?;
            let now = i64::try_from(now_ms / 1000).ok()?;
            if now < info.not_before || now > info.not_after {
                return None;
            }
            let key_pem = read(&self.dir.join(a.private_key_name.as_deref()?)).ok()?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).ok()?;
            CertifiedKey::from_der(chain, key, &provider())
                .ok()
                .map(Arc::new)
        })
    }
}

/// The certificate the HTTPS port presents: an added `"https"` certificate when there is a
/// valid one, else the node's (or `operationsApi.tls`'s). Swapped in place when certificates
/// are added or removed, so a renewal needs no restart.
pub struct HttpsIdentity {
    default: Arc<CertifiedKey>,
    current: crate::util::Published<CertifiedKey>,
}

impl HttpsIdentity {
    pub fn new(default: Arc<CertifiedKey>) -> HttpsIdentity {
        HttpsIdentity {
            current: crate::util::Published::new(default.clone()),
            default,
        }
    }

    pub fn refresh(&self, added: &AddedStore, now_ms: u64) {
        self.current.store(
            added
                .https_identity(now_ms)
                .unwrap_or_else(|| self.default.clone()),
        );
    }

    /// Whether the node's default certificate is the one being served.
    pub fn serves_default(&self) -> bool {
        Arc::ptr_eq(&self.current.load(), &self.default)
    }
}

impl std::fmt::Debug for HttpsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpsIdentity")
    }
}

impl rustls::server::ResolvesServerCert for HttpsIdentity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load())
    }
}
