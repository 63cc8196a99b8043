//! What a certificate says: names, issuer, subject, serial and validity, read with
//! x509-parser. Used for identity (the names a peer proved), revocation (the serial) and
//! display (`cluster_status`, `list_certificates`).

use serde_json::{json, Value};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Days before expiry from which a certificate is flagged in `cluster_status`.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// Upper-case hex, no separators (the form `revoked_certificates` lists).
    pub serial: String,
    /// Epoch seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Common name(s) and DNS / IP subject alternative names.
    pub names: Vec<String>,
    pub is_ca: bool,
}

/// Normalises a serial as written by a user (`0a:1b:...`, lower case) for comparisons.
pub fn normalize_serial(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_uppercase())
        .collect::<String>()
        .trim_start_matches('0')
        .to_string()
}

impl CertInfo {
    pub fn from_der(der: &[u8]) -> Result<CertInfo, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
        let mut names: Vec<String> = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_string))
            .collect();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => names.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => {
                            names.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
                        }
                        16 => {
                            let mut a = [0u8; 16];
                            a.copy_from_slice(b);
                            names.push(std::net::Ipv6Addr::from(a).to_string());
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        names.dedup();
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: normalize_serial(&cert.raw_serial_as_string()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            names,
            is_ca: cert.is_ca(),
        })
    }

    /// Whole days until expiry at `now_ms` (negative once expired).
    pub fn days_left(&self, now_ms: u64) -> i64 {
        (self.not_after - (now_ms / 1000) as i64).div_euclid(86_400)
    }

    pub fn names_include(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// The details as `cluster_status` and `list_certificates` show them.
    pub fn to_json(&self, now_ms: u64) -> Value {
        let date = |s: i64| crate::util::time::http_date(u64::try_from(s).unwrap_or(0) * 1000);
        let days = self.days_left(now_ms);
        json!({
            "issuer": self.issuer,
            "subject": self.subject,
            "subject_alt_name": self.names.join(", "),
            "serial_number": self.serial,
            "valid_from": date(self.not_before),
            "valid_to": date(self.not_after),
            "days_to_expiry": days,
            "expiring_soon": days < EXPIRY_WARNING_DAYS,
        })
    }
}
