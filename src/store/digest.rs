//! Table digests: an order-independent fingerprint of a table's live records, so two nodes can
//! tell whether they hold the same data by comparing 16 bytes (issue 9 item 5).
//!
//! A record's hash is SHA-256 over (primary key, version, origin *name*, JSON value), each
//! length-prefixed, truncated to 128 bits. A table's digest is the sum modulo 2^128 of the
//! hashes of its live records (tombstones do not count): adding and removing a record are a
//! wrapping add and subtract, so the core keeps it current with every write at the cost of one
//! or two hashes, and the same set of records gives the same digest whatever the order of the
//! writes that produced it. A sum rather than XOR: a record counted twice by a bug does not
//! cancel out and hide.
//!
//! The origin enters by name: origin ids are node-local and differ between nodes.
//!
//! Owns the hash definition and the scans that recompute digests from the store; must never
//! write anything (the core persists digests with the table statistics).

use super::record::StoredRecord;
use super::{Result, Store};
use ring::digest::{Context, SHA256};
use std::collections::HashMap;

/// Domain separation: a record hash never equals a hash of anything else Skerry computes.
const RECORD_TAG: &[u8] = b"skerry-record-digest-v1\0";
const BUCKET_TAG: &[u8] = b"skerry-key-bucket-v1\0";

/// The 128-bit hash of one live record.
pub fn record_hash(pk: &[u8], version: u64, origin: &str, json: &[u8]) -> u128 {
    let mut c = Context::new(&SHA256);
    c.update(RECORD_TAG);
    c.update(&(pk.len() as u64).to_be_bytes());
    c.update(pk);
    c.update(&version.to_be_bytes());
    c.update(&(origin.len() as u64).to_be_bytes());
    c.update(origin.as_bytes());
    c.update(&(json.len() as u64).to_be_bytes());
    c.update(json);
    let d = c.finish();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    u128::from_be_bytes(b)
}

/// The bucket (0..=255) of a primary key: by a hash of the key alone, so both sides of a
/// comparison put a key in the same bucket whatever its version or value.
pub fn bucket_of(pk: &[u8]) -> u8 {
    let mut c = Context::new(&SHA256);
    c.update(BUCKET_TAG);
    c.update(pk);
    c.finish().as_ref()[0]
}

/// A digest as shown to clients and peers: 32 lowercase hex digits.
pub fn to_hex(d: u128) -> String {
    format!("{d:032x}")
}

/// Parses [`to_hex`] output.
pub fn from_hex(s: &str) -> Option<u128> {
    (s.len() == 32)
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
}

/// Adds a record's contribution.
pub fn add(d: u128, h: u128) -> u128 {
    d.wrapping_add(h)
}

/// Removes a record's contribution.
pub fn remove(d: u128, h: u128) -> u128 {
    d.wrapping_sub(h)
}

/// One live record as the comparison of two nodes needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyEntry {
    pub pk: Vec<u8>,
    pub version: u64,
    pub origin: String,
    pub hash: u128,
}

fn live_entry(pk: &[u8], raw: &[u8], names: &HashMap<u32, String>) -> Option<(u64, String, u128)> {
    let (version, origin, deleted) = StoredRecord::header(raw)?;
    if deleted {
        return None;
    }
    let json = StoredRecord::json_slice(raw)?;
    let name = names.get(&origin).map(String::as_str).unwrap_or("");
    Some((
        version,
        name.to_string(),
        record_hash(pk, version, name, json),
    ))
}

impl Store {
    /// Recomputes a table's digest and live-record count by scanning it (start-up of a store
    /// written before digests existed, `skerry check`).
    pub fn scan_digest(&self, table: u32, names: &HashMap<u32, String>) -> Result<(u128, u64)> {
        let mut d = 0u128;
        let mut n = 0u64;
        for kv in self.scan_table(table, None)? {
            let (pk, raw) = kv?;
            if let Some((_, _, h)) = live_entry(&pk, &raw, names) {
                d = add(d, h);
                n += 1;
            }
        }
        Ok((d, n))
    }

    /// The digest of each of the 256 key buckets of a table (one scan).
    pub fn bucket_digests(&self, table: u32, names: &HashMap<u32, String>) -> Result<Vec<u128>> {
        let mut out = vec![0u128; 256];
        for kv in self.scan_table(table, None)? {
            let (pk, raw) = kv?;
            if let Some((_, _, h)) = live_entry(&pk, &raw, names) {
                let b = bucket_of(&pk) as usize;
                out[b] = add(out[b], h);
            }
        }
        Ok(out)
    }

    /// The live records of a table whose key falls in one of `buckets`, in key order, at most
    /// `limit` of them; the flag says whether more were left out.
    pub fn bucket_entries(
        &self,
        table: u32,
        names: &HashMap<u32, String>,
        buckets: &[bool; 256],
        limit: usize,
    ) -> Result<(Vec<KeyEntry>, bool)> {
        let mut out = Vec::new();
        for kv in self.scan_table(table, None)? {
            let (pk, raw) = kv?;
            if !buckets[bucket_of(&pk) as usize] {
                continue;
            }
            if let Some((version, origin, hash)) = live_entry(&pk, &raw, names) {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(KeyEntry {
                    pk: pk.to_vec(),
                    version,
                    origin,
                    hash,
                });
            }
        }
        Ok((out, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_records_written_in_any_order_give_the_same_digest() {
        let recs: Vec<(Vec<u8>, u64, &str, Vec<u8>)> = (0..50u8)
            .map(|i| {
                (
                    vec![i],
                    100 + i as u64,
                    "n1",
                    format!("{{\"v\":{i}}}").into_bytes(),
                )
            })
            .collect();
        let forward = recs
            .iter()
            .fold(0u128, |d, r| add(d, record_hash(&r.0, r.1, r.2, &r.3)));
        let backward = recs
            .iter()
            .rev()
            .fold(0u128, |d, r| add(d, record_hash(&r.0, r.1, r.2, &r.3)));
        assert_eq!(forward, backward);
        assert_ne!(forward, 0);
    }

    #[test]
    fn each_field_of_a_record_changes_its_hash() {
        let base = record_hash(b"k", 1, "n1", b"{}");
        assert_ne!(base, record_hash(b"k2", 1, "n1", b"{}"));
        assert_ne!(base, record_hash(b"k", 2, "n1", b"{}"));
        assert_ne!(base, record_hash(b"k", 1, "n2", b"{}"));
        assert_ne!(base, record_hash(b"k", 1, "n1", b"{ }"));
        // Length prefixes: moving bytes between fields is a different record.
        assert_ne!(
            record_hash(b"ab", 1, "c", b"{}"),
            record_hash(b"a", 1, "bc", b"{}")
        );
    }

    #[test]
    fn removing_a_record_restores_the_digest_without_it() {
        let a = record_hash(b"a", 1, "n1", b"{\"x\":1}");
        let b = record_hash(b"b", 2, "n1", b"{\"x\":2}");
        let with_a = add(0, a);
        assert_eq!(remove(add(with_a, b), b), with_a);
        assert_eq!(remove(with_a, a), 0);
    }

    /// Buckets partition the table: their digests sum to the table's; a key list stops at
    /// its limit and says so; tombstones are never listed.
    #[test]
    fn bucket_digests_add_up_to_the_table_and_key_lists_stop_at_their_limit() {
        use crate::store::{Durability, StoreOptions, Write};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut writes = Vec::new();
        for i in 0..40u8 {
            writes.push(Write::Record {
                table: 1,
                pk: vec![i],
                record: StoredRecord {
                    version: 10 + i as u64,
                    origin: 0,
                    // Every fourth record is a tombstone.
                    json: (i % 4 != 0).then(|| format!("{{\"i\":{i}}}").into_bytes()),
                },
            });
        }
        store.commit(&writes, Durability::Sync).unwrap();
        let names: HashMap<u32, String> = [(0, "n1".to_string())].into_iter().collect();
        let (table, live) = store.scan_digest(1, &names).unwrap();
        assert_eq!(live, 30);
        let buckets = store.bucket_digests(1, &names).unwrap();
        assert_eq!(buckets.iter().fold(0, |d, b| add(d, *b)), table);
        let all = [true; 256];
        let (entries, cut) = store.bucket_entries(1, &names, &all, 1_000).unwrap();
        assert_eq!((entries.len(), cut), (30, false));
        assert!(
            entries.iter().all(|e| e.pk[0] % 4 != 0),
            "a tombstone was listed"
        );
        assert_eq!(entries.iter().fold(0, |d, e| add(d, e.hash)), table);
        let (entries, cut) = store.bucket_entries(1, &names, &all, 7).unwrap();
        assert_eq!((entries.len(), cut), (7, true));
        let (entries, cut) = store.bucket_entries(1, &names, &[false; 256], 7).unwrap();
        assert_eq!((entries.len(), cut), (0, false));
    }

    #[test]
    fn hex_round_trips_and_rejects_other_lengths() {
        let d = record_hash(b"k", 1, "n1", b"{}");
        assert_eq!(from_hex(&to_hex(d)), Some(d));
        assert_eq!(to_hex(1).len(), 32);
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex(&"g".repeat(32)), None);
    }
}
