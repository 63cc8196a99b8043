//! Harper's certificate operations: `add_certificate`, `list_certificates`,
//! `remove_certificate`. Parses and validates the request here; `tls` stores and checks the
//! certificate. super_user only; a private key goes in and is never answered back out.

use crate::core::auth::Principal;
use crate::core::error::{OpError, OpResult};
use crate::tls::added::NewCert;
use crate::tls::NodeTls;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Longest certificate name accepted (a file name is derived from it).
const MAX_NAME: usize = 200;
/// At most this many `uses`, each at most `MAX_USE` bytes.
const MAX_USES: usize = 16;
const MAX_USE: usize = 64;

/// What the certificate operations need: the node's TLS state and a way to tell replication
/// that the trusted authorities changed.
pub struct CertOps {
    pub tls: Option<Arc<NodeTls>>,
    pub on_trust_change: Option<Box<dyn Fn() + Send + Sync>>,
}

pub fn is_cert_op(name: &str) -> bool {
    matches!(
        name,
        "add_certificate" | "list_certificates" | "remove_certificate"
    )
}

fn handler_name(op: &str) -> &'static str {
    match op {
        "add_certificate" => "addCertificate",
        "remove_certificate" => "removeCertificate",
        _ => "listCertificates",
    }
}

fn string_field(body: &Map<String, Value>, key: &str) -> Result<Option<String>, OpError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(OpError::bad_request(format!("'{key}' must be a string"))),
    }
}

fn name_field(body: &Map<String, Value>) -> Result<String, OpError> {
    let name =
        string_field(body, "name")?.ok_or_else(|| OpError::bad_request("'name' is required"))?;
    if name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(OpError::bad_request(format!(
            "'name' must be at most {MAX_NAME} bytes without control characters"
        )));
    }
    Ok(name)
}

impl CertOps {
    pub fn execute(&self, name: &str, body: &Map<String, Value>, p: &Principal) -> OpResult {
        if !p.is_super_user() {
            return Err(OpError::super_user_only(handler_name(name)));
        }
        let now = crate::util::time::now_ms();
        let Some(tls) = &self.tls else {
            return match name {
                "list_certificates" => Ok(json!([])),
                _ => Err(OpError::bad_request(
                    "this node has no TLS identity: set replication.securePort or operationsApi.network.securePort to use certificates",
                )),
            };
        };
        match name {
            "list_certificates" => Ok(Value::Array(tls.list_certificates(now))),
            "add_certificate" => {
                let cert_name = name_field(body)?;
                let certificate = string_field(body, "certificate")?
                    .ok_or_else(|| OpError::bad_request("'certificate' is required"))?;
                let private_key = string_field(body, "private_key")?;
                let is_authority = match body.get("is_authority") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(OpError::bad_request("'is_authority' must be a boolean"))
                    }
                };
                let uses = match body.get("uses") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(a))
                        if a.len() <= MAX_USES
                            && a.iter().all(|u| {
                                u.as_str()
                                    .is_some_and(|s| !s.is_empty() && s.len() <= MAX_USE)
                            }) =>
                    {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    }
                    Some(_) => {
                        return Err(OpError::bad_request(format!(
                        "'uses' must be an array of at most {MAX_USES} names (such as \"https\")"
                    )))
                    }
                };
                if tls.is_builtin(&cert_name, now) {
                    return Err(OpError::bad_request(format!(
                        "'{cert_name}' is the name of a certificate this node manages itself; choose another name"
                    )));
                }
                tls.added()
                    .add(
                        NewCert {
                            name: cert_name.clone(),
                            certificate,
                            private_key,
                            is_authority,
                            uses,
                        },
                        now as f64,
                    )
                    .map_err(OpError::bad_request)?;
                self.changed(tls);
                log::info!("certificate '{cert_name}' added");
                Ok(json!({ "message": format!("Successfully added certificate: {cert_name}") }))
            }
            "remove_certificate" => {
                let cert_name = name_field(body)?;
                if tls.is_builtin(&cert_name, now) {
                    return Err(OpError::bad_request(format!(
                        "'{cert_name}' is a certificate this node manages itself and cannot be removed"
                    )));
                }
                if !tls.added().remove(&cert_name).map_err(OpError::internal)? {
                    return Err(OpError::bad_request(format!("{cert_name} not found")));
                }
                self.changed(tls);
                log::info!("certificate '{cert_name}' removed");
                Ok(json!({ "message": format!("Successfully removed {cert_name}") }))
            }
            _ => Err(OpError::bad_request(format!("unknown operation '{name}'"))),
        }
    }

    fn changed(&self, tls: &NodeTls) {
        tls.refresh_https();
        if let Some(f) = &self.on_trust_change {
            f();
        }
    }
}
