//! Authentication: Basic credentials and Bearer tokens against the published users, password
//! hashing, and operation/refresh tokens.
//!
//! Passwords are stored as argon2id PHC strings (OWASP's m=7 MiB, t=5, p=1; Harper's own
//! salted-SHA256 format is also verified, so users copied from a Harper node can log in). A
//! check costs tens of milliseconds on purpose, far too slow for every request of a keep-alive
//! client sending thousands a second, so successful checks are cached, keyed by a hash of
//! (user, password, stored hash): a password change or a new hash misses the cache by
//! construction; failed checks are never cached. All argon2 work runs on one dedicated thread:
//! concurrent first logins queue instead of each worker allocating (and its allocator keeping)
//! the algorithm's memory, which grew RSS by ~20 MB per worker.

use crate::core::auth::{AuthState, Principal, User};
use crate::core::error::OpError;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use crossbeam_channel::Sender;
use ring::{digest, hmac};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

enum Job {
    Hash(String, Sender<Result<String, String>>),
    Verify(String, String, Sender<bool>),
}

/// Password checks that may run at once: argon2 is CPU- and memory-hard on purpose, so a
/// small fixed pool bounds what concurrent logins cost, and two workers keep one slow client
/// from delaying everyone's first login.
const PASSWORD_WORKERS: usize = 2;

/// The password workers: every argon2 computation of the process runs on one of them.
fn password_thread() -> &'static Mutex<Sender<Job>> {
    static WORKER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    WORKER.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..PASSWORD_WORKERS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || {
                    let argon = argon2_hasher();
                    for job in rx {
                        match job {
                            Job::Hash(pw, reply) => {
                                let mut salt = [0u8; 16];
                                crate::util::random_bytes(&mut salt);
                                let r = argon
                                    .hash_password_with_salt(pw.as_bytes(), &salt)
                                    .map(|h| h.to_string())
                                    .map_err(|e| e.to_string());
                                let _ = reply.send(r);
                            }
                            Job::Verify(pw, stored, reply) => {
                                let _ = reply.send(
                                    argon
                                        .verify_password(pw.as_bytes(), stored.as_str())
                                        .is_ok(),
                                );
                            }
                        }
                    }
                });
            if let Err(e) = spawned {
                log::error!("cannot start a password thread: {e}");
            }
        }
        Mutex::new(tx)
    })
}

/// argon2id with OWASP's minimum-memory configuration (m = 7 MiB, t = 5, p = 1).
fn argon2_hasher() -> Argon2<'static> {
    match argon2::Params::new(7 * 1024, 5, 1, None) {
        Ok(p) => Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p),
        Err(_) => Argon2::default(),
    }
}

fn send_job(job: Job) -> bool {
    password_thread()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .is_ok()
}

/// Hashes a new password (argon2id) on the password thread.
pub fn hash_password(password: &str) -> Result<String, OpError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    if !send_job(Job::Hash(password.to_string(), tx)) {
        return Err(OpError::internal("the password thread is not running"));
    }
    rx.recv()
        .map_err(|_| OpError::internal("the password thread is not running"))?
        .map_err(|e| OpError::internal(format!("cannot hash password: {e}")))
}

/// Checks a password against a stored hash (argon2 PHC string, or Harper's default
/// `salt(16) ‖ hex(sha256(password ‖ salt))`).
pub fn verify_password(password: &str, stored: &str) -> bool {
    if stored.starts_with("$argon2") {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if !send_job(Job::Verify(password.to_string(), stored.to_string(), tx)) {
            return false;
        }
        return rx.recv().unwrap_or(false);
    }
    if stored.len() == 16 + 64 && stored.is_char_boundary(16) {
        let (salt, hex) = stored.split_at(16);
        let d = digest::digest(&digest::SHA256, format!("{password}{salt}").as_bytes());
        return constant_time_eq(crate::util::hex(d.as_ref()).as_bytes(), hex.as_bytes());
    }
    false
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const CACHE_LIMIT: usize = 4096;

/// Successful credential checks, shared by every worker (a lock held for a hash lookup).
fn verified() -> &'static Mutex<HashSet<[u8; 32]>> {
    static VERIFIED: OnceLock<Mutex<HashSet<[u8; 32]>>> = OnceLock::new();
    VERIFIED.get_or_init(|| Mutex::new(HashSet::new()))
}

fn cache_key(user: &str, password: &str, stored: &str) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in [user, password, stored] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A stored hash nobody's password matches, verified for unknown users so that they take as
/// long to refuse as a wrong password (no user-enumeration by timing).
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut pw = [0u8; 24];
        crate::util::random_bytes(&mut pw);
        hash_password(&crate::util::hex(&pw)).unwrap_or_default()
    })
}

/// Consecutive failed logins before back-off starts, per client address and per user name.
const BACKOFF_AFTER_ADDRESS: u32 = 5;
const BACKOFF_AFTER_USER: u32 = 10;
/// Longest back-off (the delay doubles with each further failure).
const BACKOFF_MAX_ADDRESS: Duration = Duration::from_secs(60);
/// Per user it stays short: a guesser must not be able to lock a real user out for long.
const BACKOFF_MAX_USER: Duration = Duration::from_secs(5);
/// Most tracked keys; the oldest half is dropped beyond it (bounded memory under a flood of
/// random user names).
const BACKOFF_KEYS: usize = 10_000;

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    until: Option<std::time::Instant>,
    last: std::time::Instant,
}

fn failures() -> &'static Mutex<HashMap<String, Failures>> {
    static F: OnceLock<Mutex<HashMap<String, Failures>>> = OnceLock::new();
    F.get_or_init(|| Mutex::new(HashMap::new()))
}

fn backoff_keys(user: &str, ip: Option<IpAddr>) -> Vec<(String, u32, Duration)> {
    let mut keys = vec![(format!("u:{user}"), BACKOFF_AFTER_USER, BACKOFF_MAX_USER)];
    if let Some(ip) = ip {
        keys.push((
            format!("a:{ip}"),
            BACKOFF_AFTER_ADDRESS,
            BACKOFF_MAX_ADDRESS,
        ));
    }
    keys
}

/// Whether logins for `user` from `ip` are backing off right now.
fn backing_off(user: &str, ip: Option<IpAddr>) -> bool {
    let now = std::time::Instant::now();
    let f = failures().lock().unwrap_or_else(|p| p.into_inner());
    backoff_keys(user, ip)
        .iter()
        .any(|(k, _, _)| f.get(k).and_then(|x| x.until).is_some_and(|u| u > now))
}

fn record_login(user: &str, ip: Option<IpAddr>, ok: bool) {
    if !ok {
        // For operators (and tools such as fail2ban); the name is the client's text, so it is
        // cut and quoted, and the password never comes here.
        let shown: String = user.chars().take(64).collect();
        match ip {
            Some(ip) => log::warn!("login failed for user {shown:?} from {ip}"),
            None => log::warn!("login failed for user {shown:?}"),
        }
    }
    let now = std::time::Instant::now();
    let mut f = failures().lock().unwrap_or_else(|p| p.into_inner());
    for (key, after, max) in backoff_keys(user, ip) {
        if ok {
            f.remove(&key);
            continue;
        }
        let e = f.entry(key).or_insert(Failures {
            count: 0,
            until: None,
            last: now,
        });
        e.count = e.count.saturating_add(1);
        e.last = now;
        if e.count >= after {
            let exp = (e.count - after).min(16);
            let delay = Duration::from_secs(1u64 << exp).min(max);
            e.until = Some(now + delay);
        }
    }
    if f.len() > BACKOFF_KEYS {
        let mut by_age: Vec<(String, std::time::Instant)> =
            f.iter().map(|(k, v)| (k.clone(), v.last)).collect();
        by_age.sort_by_key(|(_, t)| *t);
        for (k, _) in by_age.into_iter().take(BACKOFF_KEYS / 2) {
            f.remove(&k);
        }
    }
}

/// Verifies credentials for `user` from client address `ip`, consulting the cache of earlier
/// successes. Unknown users cost as much as wrong passwords; after repeated failures from one
/// address (or for one user name) further attempts are refused at once, without a check,
/// for a doubling back-off.
pub fn check_credentials(
    auth: &AuthState,
    user: &str,
    password: &str,
    ip: Option<IpAddr>,
) -> Option<Principal> {
    let u = auth.users.get(user);
    let key = u.map(|u| cache_key(user, password, &u.password_hash));
    let cached = key.is_some_and(|k| {
        verified()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&k)
    });
    if cached {
        // Credentials already proven: no guess, no cost, no back-off (a guesser must not be
        // able to lock out clients that use the right password).
        return auth.principal(user);
    }
    // While backing off, refuse at once and do not count the attempt (a client retrying
    // during the back-off must not push it further out).
    if backing_off(user, ip) {
        return None;
    }
    let (Some(u), Some(key)) = (u, key) else {
        verify_password(password, dummy_hash());
        record_login(user, ip, false);
        return None;
    };
    if !verify_password(password, &u.password_hash) {
        record_login(user, ip, false);
        return None;
    }
    record_login(user, ip, true);
    let mut c = verified().lock().unwrap_or_else(|p| p.into_inner());
    if c.len() >= CACHE_LIMIT {
        c.clear();
    }
    c.insert(key);
    drop(c);
    auth.principal(user)
}

/// A short digest of what a user's tokens depend on (password, role, active flag and the
/// record's last change): tokens carry it, and a token whose user changed since it was issued
/// is refused, also after the change is undone (deactivate, then reactivate).
pub fn fingerprint(u: &User) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let changed = u
        .record
        .get(crate::core::catalog::UPDATED_TIME)
        .map(Value::to_string)
        .unwrap_or_default();
    for part in [
        u.password_hash.as_str(),
        u.role_id.as_str(),
        changed.as_str(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    ctx.update(&[u8::from(u.active)]);
    crate::util::hex(&ctx.finish().as_ref()[..12])
}

/// Signs and checks operation and refresh tokens (JWT, HS256) with this node's secret.
pub struct Tokens {
    key: hmac::Key,
    pub operation_ttl: Duration,
    pub refresh_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Operation,
    Refresh,
}

impl TokenKind {
    fn name(self) -> &'static str {
        match self {
            TokenKind::Operation => "operation",
            TokenKind::Refresh => "refresh",
        }
    }
}

impl Tokens {
    pub fn new(secret: &[u8], operation_ttl: Duration, refresh_ttl: Duration) -> Self {
        Tokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            operation_ttl,
            refresh_ttl,
        }
    }

    /// A token of `kind` for `user`, bound to the user's current fingerprint.
    pub fn issue(&self, user: &User, kind: TokenKind, now_ms: u64) -> String {
        let ttl = match kind {
            TokenKind::Operation => self.operation_ttl,
            TokenKind::Refresh => self.refresh_ttl,
        };
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = json!({
            "username": user.username,
            "typ": kind.name(),
            "fp": fingerprint(user),
            "iat": now_ms / 1000,
            "exp": (now_ms + ttl.as_millis() as u64) / 1000,
        });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let sig = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// The user a valid, unexpired token of `kind` was issued to, if that user still exists,
    /// is active and has not changed password or role since (the token's fingerprint).
    pub fn verify(
        &self,
        token: &str,
        kind: TokenKind,
        now_ms: u64,
        auth: &AuthState,
    ) -> Result<Principal, OpError> {
        let invalid = || OpError::unauthorized("invalid token");
        let (signing_input, sig) = token.rsplit_once('.').ok_or_else(invalid)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| invalid())?;
        hmac::verify(&self.key, signing_input.as_bytes(), &sig).map_err(|_| invalid())?;
        let (_, payload) = signing_input.split_once('.').ok_or_else(invalid)?;
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?)
                .map_err(|_| invalid())?;
        if claims.get("typ").and_then(Value::as_str) != Some(kind.name()) {
            return Err(invalid());
        }
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        if now_ms / 1000 >= exp {
            return Err(OpError::unauthorized("token expired"));
        }
        let username = claims
            .get("username")
            .and_then(Value::as_str)
            .ok_or_else(invalid)?;
        let user = auth.users.get(username).ok_or_else(invalid)?;
        if !user.active
            || claims.get("fp").and_then(Value::as_str) != Some(fingerprint(user).as_str())
        {
            return Err(invalid());
        }
        auth.principal(username).ok_or_else(invalid)
    }
}

/// Resolves the `Authorization` header of a request to a principal (Harper's 401 texts).
pub fn authenticate(
    header: Option<&str>,
    auth: &AuthState,
    tokens: &Tokens,
    now_ms: u64,
    ip: Option<IpAddr>,
) -> Result<Principal, OpError> {
    let Some(header) = header.map(str::trim).filter(|h| !h.is_empty()) else {
        return Err(OpError::unauthorized("Must login"));
    };
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let principal = if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| OpError::unauthorized("Login failed"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| OpError::unauthorized("Login failed"))?;
        check_credentials(auth, user, pass, ip)
            .ok_or_else(|| OpError::unauthorized("Login failed"))?
    } else if scheme.eq_ignore_ascii_case("bearer") {
        tokens.verify(rest.trim(), TokenKind::Operation, now_ms, auth)?
    } else {
        return Err(OpError::unauthorized("Login failed"));
    };
    if auth
        .users
        .get(&principal.username)
        .is_some_and(|u| !u.active)
    {
        return Err(OpError::unauthorized(
            "Cannot complete request: User is inactive",
        ));
    }
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(hash: &str) -> AuthState {
        let mut s = AuthState::default();
        s.apply_role(
            "super_user",
            json!({"id":"super_user","role":"super_user","permission":{"super_user":true}})
                .as_object(),
        );
        s.apply_user(
            "admin",
            json!({"username":"admin","password":hash,"role":"super_user","active":true})
                .as_object(),
        );
        s
    }

    #[test]
    fn argon2_hashes_verify_and_wrong_passwords_fail() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("S3cret", &h));
    }

    #[test]
    fn harpers_salted_sha256_format_is_accepted() {
        let salt = "abcdefghijklmnop";
        let d = digest::digest(&digest::SHA256, format!("password{salt}").as_bytes());
        let stored = format!("{salt}{}", crate::util::hex(d.as_ref()));
        assert!(verify_password("password", &stored));
        assert!(!verify_password("nope", &stored));
    }

    #[test]
    fn basic_auth_resolves_users_and_rejects_with_harpers_texts() {
        let s = state(&hash_password("pw").unwrap());
        let t = Tokens::new(b"k", Duration::from_secs(60), Duration::from_secs(600));
        let basic = |u: &str, p: &str| format!("Basic {}", STANDARD.encode(format!("{u}:{p}")));
        let p = authenticate(Some(&basic("admin", "pw")), &s, &t, 0, None).unwrap();
        assert!(p.is_super_user());
        // Cached path gives the same answer.
        assert!(authenticate(Some(&basic("admin", "pw")), &s, &t, 0, None).is_ok());
        let e = authenticate(Some(&basic("admin", "bad")), &s, &t, 0, None).unwrap_err();
        assert_eq!((e.status, e.message()), (401, "Login failed"));
        let e = authenticate(Some(&basic("nobody", "x")), &s, &t, 0, None).unwrap_err();
        assert_eq!(e.message(), "Login failed");
        let e = authenticate(None, &s, &t, 0, None).unwrap_err();
        assert_eq!(e.message(), "Must login");
        let e = authenticate(Some("Basic !!!"), &s, &t, 0, None).unwrap_err();
        assert_eq!(e.message(), "Login failed");
    }

    #[test]
    fn tokens_expire_and_cannot_be_forged_or_swapped() {
        let s = state(&hash_password("pw").unwrap());
        let t = Tokens::new(b"secret", Duration::from_secs(60), Duration::from_secs(600));
        let admin = s.users["admin"].clone();
        let tok = t.issue(&admin, TokenKind::Operation, 1_000_000);
        let bearer = format!("Bearer {tok}");
        assert!(authenticate(Some(&bearer), &s, &t, 1_000_000, None).is_ok());
        let e = authenticate(Some(&bearer), &s, &t, 1_000_000 + 61_000, None).unwrap_err();
        assert_eq!(e.message(), "token expired");
        let other = Tokens::new(b"other", Duration::from_secs(60), Duration::from_secs(600));
        assert!(authenticate(Some(&bearer), &s, &other, 1_000_000, None).is_err());
        let refresh = t.issue(&admin, TokenKind::Refresh, 1_000_000);
        assert!(t
            .verify(&refresh, TokenKind::Operation, 1_000_000, &s)
            .is_err());
        assert_eq!(
            t.verify(&refresh, TokenKind::Refresh, 1_000_000, &s)
                .unwrap()
                .username,
            "admin"
        );
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;
    use serde_json::json;

    fn state(hash: &str, role: &str, active: bool) -> AuthState {
        let mut s = AuthState::default();
        for r in ["super_user", "other"] {
            s.apply_role(
                r,
                json!({"id": r, "role": r, "permission": {"super_user": r == "super_user"}})
                    .as_object(),
            );
        }
        s.apply_user(
            "u",
            json!({"username":"u","password":hash,"role":role,"active":active}).as_object(),
        );
        s
    }

    /// A token stops working when what it was issued for changes: the password, the role, or
    /// the active flag.
    #[test]
    fn tokens_die_when_the_password_role_or_active_flag_changes() {
        let t = Tokens::new(b"k", Duration::from_secs(600), Duration::from_secs(600));
        let before = state("h1", "super_user", true);
        let tok = t.issue(&before.users["u"], TokenKind::Operation, 1_000);
        assert!(t.verify(&tok, TokenKind::Operation, 1_000, &before).is_ok());
        for (case, after) in [
            ("password", state("h2", "super_user", true)),
            ("role", state("h1", "other", true)),
            ("active", state("h1", "super_user", false)),
            ("deleted", AuthState::default()),
        ] {
            let e = t.verify(&tok, TokenKind::Operation, 1_000, &after);
            assert_eq!(
                e.map(|p| p.username).unwrap_err().message(),
                "invalid token",
                "{case}"
            );
        }
    }
}
