//! Small, dependency-free helpers shared by every layer: wall-clock time, HTTP dates, random ids.
//!
//! Owns nothing stateful. Must never touch the store, the network or the core's state.

#[cfg(test)]
pub mod alloc_probe;
pub mod logfile;
pub mod oneshot;
pub mod redact;
pub mod time;

use ring::rand::{SecureRandom, SystemRandom};

/// Fills `buf` from the operating system's CSPRNG.
///
/// Failure of the OS random source is unrecoverable (we would hand out guessable passwords, token
/// secrets or ids), so it stops the process loudly instead of degrading.
pub fn random_bytes(buf: &mut [u8]) {
    if SystemRandom::new().fill(buf).is_err() {
        log::error!("the operating system's random number generator failed; stopping");
        std::process::exit(70);
    }
}

/// A random RFC 4122 version 4 UUID in its canonical lowercase text form.
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    random_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Lowercase hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    s
}

/// A random password of `len` characters from an unambiguous alphabet (about 5.9 bits each).
pub fn random_password(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        random_bytes(&mut buf);
        for &b in buf.iter() {
            // Rejection sampling keeps the distribution uniform (256 is not a multiple of 56).
            let limit = 256 - (256 % ALPHABET.len());
            if (b as usize) < limit && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    out
}

/// A value published by one writer and read by many threads: readers take a cheap `Arc` clone of
/// the current version and keep using it while the writer publishes a newer one (the catalog and
/// users are published this way by the core after each commit).
pub struct Published<T> {
    current: std::sync::RwLock<std::sync::Arc<T>>,
}

impl<T> Published<T> {
    pub fn new(v: std::sync::Arc<T>) -> Self {
        Published {
            current: std::sync::RwLock::new(v),
        }
    }

    pub fn load(&self) -> std::sync::Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn store(&self, v: std::sync::Arc<T>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_version_and_variant_bits() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(uuid_v4(), u);
    }

    #[test]
    fn random_password_has_requested_length_and_alphabet() {
        let p = random_password(24);
        assert_eq!(p.len(), 24);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
