//! A minimal binary codec (varints and length-prefixed bytes) for audit entries and wire frames.
//!
//! Hand-rolled rather than a serialization crate because the formats are tiny, must stay stable on
//! disk and on the wire, and every field must be bounds-checked on decode (peer input is
//! untrusted): a malformed buffer is an error, never a panic or a huge allocation.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed data: {}", self.0)
    }
}

#[derive(Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn with_capacity(n: usize) -> Self {
        Enc {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u64_fixed(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    /// A table's declared attributes: `(name, type)`, an absent type written as "".
    pub fn attributes(&mut self, attributes: &[(String, Option<String>)]) {
        self.varint(attributes.len() as u64);
        for (name, ty) in attributes {
            self.str(name);
            self.str(ty.as_deref().unwrap_or(""));
        }
    }
    pub fn bool(&mut self, b: bool) {
        self.u8(b as u8);
    }
}

/// Items reserved up front for a decoded count; beyond it the Vec grows as items actually
/// decode. A count is only bounded by the bytes left, and an item in memory is many times its
/// smallest encoding (a `Txn` is ~112 bytes, its smallest encoding 13), so reserving the whole
/// count let a frame of garbage claiming millions of items reserve gigabytes before the first
/// item failed to decode.
const MAX_PREALLOC: usize = 1024;

/// An empty Vec with room for up to `count` items, capped (see [`MAX_PREALLOC`]).
pub fn vec_for<T>(count: usize) -> Vec<T> {
    Vec::with_capacity(count.min(MAX_PREALLOC))
}

pub struct Dec<'a> {
    buf: &'a [u8],
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf }
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError("truncated"))?;
        self.buf = rest;
        Ok(b)
    }
    pub fn u64_fixed(&mut self) -> Result<u64, DecodeError> {
        let raw = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(raw);
        Ok(u64::from_be_bytes(a))
    }
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long"))
    }
    /// A length-prefixed byte string; the length is checked against what is left, so a hostile
    /// length can never cause a large allocation.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| DecodeError("length overflow"))?;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError("invalid utf-8"))
    }
    pub fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_string)
    }
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("invalid bool")),
        }
    }
    /// The inverse of [`Enc::attributes`].
    pub fn attributes(&mut self) -> Result<Vec<(String, Option<String>)>, DecodeError> {
        let n = self.count()?;
        let mut attributes = vec_for(n);
        for _ in 0..n {
            let name = self.string()?;
            let ty = self.string()?;
            attributes.push((name, (!ty.is_empty()).then_some(ty)));
        }
        Ok(attributes)
    }
    /// A count of items that each take at least one byte: bounded by what is left.
    pub fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > self.buf.len() as u64 {
            return Err(DecodeError("count exceeds data"));
        }
        Ok(n as usize)
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError("truncated"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_field_kinds() {
        let mut e = Enc::default();
        e.u8(7);
        e.varint(0);
        e.varint(300);
        e.varint(u64::MAX);
        e.u64_fixed(42);
        e.str("héllo");
        e.bool(true);
        let mut d = Dec::new(&e.buf);
        assert_eq!(d.u8().unwrap(), 7);
        assert_eq!(d.varint().unwrap(), 0);
        assert_eq!(d.varint().unwrap(), 300);
        assert_eq!(d.varint().unwrap(), u64::MAX);
        assert_eq!(d.u64_fixed().unwrap(), 42);
        assert_eq!(d.str().unwrap(), "héllo");
        assert!(d.bool().unwrap());
        assert!(d.is_empty());
    }

    #[test]
    fn hostile_lengths_are_errors_not_allocations() {
        let mut e = Enc::default();
        e.varint(u64::MAX / 2);
        assert!(Dec::new(&e.buf).bytes().is_err());
        assert!(Dec::new(&e.buf).count().is_err());
        assert!(Dec::new(&[0xff; 20]).varint().is_err());
        assert!(Dec::new(&[]).u8().is_err());
    }
}
