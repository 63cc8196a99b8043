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
    /// Subject and issuer as Harper (OpenSSL) prints them: `CN=a O=b` with commas escaped.
    pub subject_text: String,
    pub issuer_text: String,
    /// Subject alternative names as OpenSSL prints them: `DNS:a, IP Address:1.2.3.4`.
    pub san_text: String,
}

/// A name as OpenSSL's one-line form prints it: attributes separated by spaces, commas in
/// values escaped.
fn name_text(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut parts = Vec::new();
    for rdn in name.iter() {
        for attr in rdn.iter() {
            let oid = attr.attr_type().to_id_string();
            let key = match oid.as_str() {
                "2.5.4.3" => "CN",
                "2.5.4.6" => "C",
                "2.5.4.8" => "ST",
                "2.5.4.7" => "L",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                "2.5.4.5" => "serialNumber",
                "1.2.840.113549.1.9.1" => "emailAddress",
                "0.9.2342.19200300.100.1.25" => "DC",
                other => other,
            };
            let value = attr.as_str().unwrap_or("?").replace(',', "\\,");
            parts.push(format!("{key}={value}"));
        }
    }
    parts.join(" ")
}

/// A time as OpenSSL prints it: `Dec  3 11:41:45 2026 GMT`.
fn openssl_date(t: time::OffsetDateTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {:>2} {:02}:{:02}:{:02} {} GMT",
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.year()
    )
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
        let mut san_parts = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => {
                        san_parts.push(format!("DNS:{d}"));
                        names.push(d.to_string())
                    }
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => {
                            let ip = std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string();
                            san_parts.push(format!("IP Address:{ip}"));
                            names.push(ip)
                        }
                        16 => {
                            let mut a = [0u8; 16];
                            a.copy_from_slice(b);
                            let ip = std::net::Ipv6Addr::from(a).to_string();
                            san_parts.push(format!("IP Address:{ip}"));
                            names.push(ip);
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
            subject_text: name_text(cert.subject()),
            issuer_text: name_text(cert.issuer()),
            san_text: san_parts.join(", "),
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

    /// The details as Harper's `list_certificates` shows them (OpenSSL's texts), plus the
    /// days to expiry.
    pub fn harper_details(&self, now_ms: u64) -> Value {
        let date = |s: i64| {
            time::OffsetDateTime::from_unix_timestamp(s)
                .map(openssl_date)
                .unwrap_or_default()
        };
        let mut d = json!({
            "issuer": self.issuer_text,
            "subject": self.subject_text,
            "serial_number": self.serial,
            "valid_from": date(self.not_before),
            "valid_to": date(self.not_after),
            "days_to_expiry": self.days_left(now_ms),
        });
        if !self.san_text.is_empty() {
            d["subject_alt_name"] = json!(self.san_text);
        }
        d
    }
}
