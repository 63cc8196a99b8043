//! Removes credentials from text before it is logged.
//!
//! Skerry itself never logs a credential, but dependencies do at trace level (tungstenite
//! prints a handshake's headers, `Authorization` included). Every log line passes through
//! [`redact`] (the logger in `main.rs`), so no level and no module can leak one.

use std::borrow::Cow;

const REDACTED: &str = "[redacted]";

/// Words after which the rest of a value is secret: `Authorization: ...`,
/// `"password":"..."`, `Basic <base64>`, `Bearer <token>`.
const KEYS: [&str; 4] = [
    "authorization",
    "password",
    "refresh_token",
    "operation_token",
];
const SCHEMES: [&str; 2] = ["basic ", "bearer "];

fn ends_value(c: u8) -> bool {
    matches!(
        c,
        b'"' | b'\'' | b',' | b'\r' | b'\n' | b'}' | b']' | b';' | b'&'
    )
}

/// `text` with every credential-looking value replaced by `[redacted]`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    if !KEYS
        .iter()
        .chain(SCHEMES.iter())
        .any(|k| lower.contains(k.trim()))
    {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let lb = lower.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        // A scheme word: keep it, drop the token after it.
        if let Some(s) = SCHEMES.iter().find(|s| lb[i..].starts_with(s.as_bytes())) {
            out.push_str(&text[i..i + s.len()]);
            out.push_str(REDACTED);
            i += s.len();
            while i < bytes.len() && !ends_value(bytes[i]) && bytes[i] != b' ' {
                i += 1;
            }
            continue;
        }
        // A key: keep it and its separator (`": "`, `=`), drop the value.
        if let Some(k) = KEYS.iter().find(|k| lb[i..].starts_with(k.as_bytes())) {
            let mut j = i + k.len();
            while j < bytes.len() && matches!(bytes[j], b'"' | b'\'' | b':' | b'=' | b' ') {
                j += 1;
            }
            if j > i + k.len() && j < bytes.len() {
                out.push_str(&text[i..j]);
                out.push_str(REDACTED);
                i = j;
                while i < bytes.len() && !ends_value(bytes[i]) {
                    i += 1;
                }
                continue;
            }
        }
        let c = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + c]);
        i += c;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_survive() {
        let cases = [
            "Request { headers: {\"authorization\": \"Basic YWRtaW46cGFzc3dvcmQ=\", \"host\": \"x\"} }",
            "Authorization: Bearer eyJhbGciOi.eyJ1c2Vy.sig\r\nHost: x",
            r#"{"username":"admin","password":"hunter2"}"#,
            "sending refresh_token=abc.def.ghi&x=1",
        ];
        for c in cases {
            let r = redact(c);
            for secret in ["YWRtaW46cGFzc3dvcmQ=", "eyJ1c2Vy", "hunter2", "abc.def"] {
                assert!(!r.contains(secret), "{c} -> {r}");
            }
            assert!(r.contains(REDACTED), "{r}");
        }
        assert_eq!(redact("nothing to see"), "nothing to see");
        assert_eq!(redact("héllo passwörd"), "héllo passwörd");
    }
}
