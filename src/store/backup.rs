//! Backups: one consistent, streamed file of the whole store (`get_backup`), restored into an
//! empty `rootPath` by `skerry restore`; and the offline consistency check (`skerry check`).
//!
//! The file is a logical dump taken from one fjall snapshot (writes go on meanwhile): every
//! key and value of the replicated state (records, indexes, audit log, catalog, origins,
//! cursors, table statistics, the HLC floor), without node-local metadata (token secret,
//! retained peer credentials, link policies), which belongs to the node that wrote it. So a
//! restored node keeps its version vector and, joining the cluster, continues from its
//! cursors instead of asking for a full copy.
//!
//! Layout: `SKRYBAK1`, store format (u32), creation time (u64 ms), then entries
//! `1 ‖ keyspace (u8 len + name) ‖ key (u32 len) ‖ value (u32 len)`, then `0 ‖ entry count
//! (u64) ‖ SHA-256 of every byte up to and including the 0`. All integers big-endian. A restore verifies
//! the digest and the count before it reports success, and removes what it wrote otherwise.

use super::{Result, Store, StoreError, StoreOptions, FORMAT_VERSION, META_LOCAL};
use fjall::Readable;
use ring::digest;
use std::io::{Read, Write};
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"SKRYBAK1";
/// Entries restored per write batch.
const RESTORE_BATCH_BYTES: usize = 8 << 20;
/// Largest key or value accepted from a backup file (fjall's own limits are lower for keys).
const MAX_ITEM: u32 = 256 << 20;

fn io(e: std::io::Error) -> StoreError {
    StoreError(format!("backup I/O: {e}"))
}

/// Writes through a SHA-256 of everything written.
struct Hashing<'a> {
    out: &'a mut dyn Write,
    ctx: digest::Context,
}

impl Hashing<'_> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.ctx.update(b);
        self.out.write_all(b).map_err(io)
    }
}

/// What a backup or restore covered.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub entries: u64,
    pub bytes: u64,
}

impl Store {
    /// Streams a consistent backup of the store to `out`.
    pub fn backup(&self, out: &mut dyn Write) -> Result<Summary> {
        let snap = self.inner.db.snapshot();
        let mut h = Hashing {
            out,
            ctx: digest::Context::new(&digest::SHA256),
        };
        h.put(MAGIC)?;
        h.put(&FORMAT_VERSION.to_be_bytes())?;
        h.put(&crate::util::time::now_ms().to_be_bytes())?;
        let mut sum = Summary::default();
        let mut names: Vec<String> = self
            .inner
            .db
            .list_keyspace_names()
            .iter()
            .map(|k| k.to_string())
            .filter(|n| n == "meta" || n == "audit" || n.starts_with('d') || n.starts_with('i'))
            .collect();
        names.sort();
        for name in names {
            let ks = self
                .inner
                .db
                .keyspace(&name, || self.inner.ks_opts.clone())?;
            for kv in snap.iter(&ks) {
                let (k, v) = kv.into_inner()?;
                // Node-local metadata stays with the node that wrote it.
                if name == "meta" && k.first() == Some(&META_LOCAL) {
                    continue;
                }
                h.put(&[1, name.len() as u8])?;
                h.put(name.as_bytes())?;
                h.put(&(k.len() as u32).to_be_bytes())?;
                h.put(&k)?;
                h.put(&(v.len() as u32).to_be_bytes())?;
                h.put(&v)?;
                sum.entries += 1;
                sum.bytes += (k.len() + v.len()) as u64;
            }
        }
        h.put(&[0])?;
        let d = h.ctx.clone().finish();
        h.out.write_all(&sum.entries.to_be_bytes()).map_err(io)?;
        h.out.write_all(d.as_ref()).map_err(io)?;
        h.out.flush().map_err(io)?;
        Ok(sum)
    }
}

/// Reads exactly `n` bytes into the digest.
fn take(r: &mut dyn Read, ctx: &mut digest::Context, n: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    r.read_exact(&mut b).map_err(|e| {
        StoreError(format!(
            "the backup file ends early or cannot be read ({e})"
        ))
    })?;
    ctx.update(&b);
    Ok(b)
}

fn u32_of(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Restores the backup read from `input` into `root`, which must be empty or missing. On any
/// failure (a damaged or truncated file, a digest mismatch) everything written is removed.
pub fn restore(root: &Path, opts: &StoreOptions, input: &mut dyn Read) -> Result<Summary> {
    if root.exists() {
        let mut entries = std::fs::read_dir(root)
            .map_err(|e| StoreError(format!("cannot read {}: {e}", root.display())))?;
        if entries.next().is_some() {
            return Err(StoreError(format!(
                "{} is not empty: restore only into an empty (or new) rootPath",
                root.display()
            )));
        }
    }
    let result = restore_into(root, opts, input);
    if result.is_err() {
        if let Ok(d) = std::fs::read_dir(root) {
            for e in d.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
    result
}

fn restore_into(root: &Path, opts: &StoreOptions, input: &mut dyn Read) -> Result<Summary> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let head = take(input, &mut ctx, 20)?;
    if &head[..8] != MAGIC {
        return Err(StoreError("this is not a Skerry backup file".into()));
    }
    let format = u32_of(&head[8..12]);
    if format > FORMAT_VERSION {
        return Err(StoreError(format!(
            "the backup was written by a newer Skerry (store format {format}); this binary reads up to {FORMAT_VERSION}"
        )));
    }
    let store = Store::open(root, opts)?;
    let db = &store.inner.db;
    let mut batch = db.batch();
    let mut pending = 0usize;
    let mut handles: std::collections::HashMap<String, fjall::Keyspace> = Default::default();
    let mut sum = Summary::default();
    loop {
        let tag = take(input, &mut ctx, 1)?;
        match tag[0] {
            1 => {}
            0 => break,
            t => {
                return Err(StoreError(format!(
                    "the backup file is damaged (entry tag {t})"
                )))
            }
        }
        let n = take(input, &mut ctx, 1)?[0] as usize;
        let name = String::from_utf8(take(input, &mut ctx, n)?)
            .map_err(|_| StoreError("the backup file is damaged (keyspace name)".into()))?;
        let valid = name == "meta"
            || name == "audit"
            || ((name.starts_with('d') || name.starts_with('i'))
                && name.len() > 1
                && name[1..].bytes().all(|b| b.is_ascii_digit()));
        if !valid {
            return Err(StoreError(format!(
                "the backup file is damaged (keyspace '{name}')"
            )));
        }
        let klen = u32_of(&take(input, &mut ctx, 4)?);
        if klen > MAX_ITEM {
            return Err(StoreError("the backup file is damaged (key length)".into()));
        }
        let key = take(input, &mut ctx, klen as usize)?;
        let vlen = u32_of(&take(input, &mut ctx, 4)?);
        if vlen > MAX_ITEM {
            return Err(StoreError(
                "the backup file is damaged (value length)".into(),
            ));
        }
        let value = take(input, &mut ctx, vlen as usize)?;
        let ks = match handles.get(&name) {
            Some(k) => k.clone(),
            None => {
                let k = db.keyspace(&name, || store.inner.ks_opts.clone())?;
                handles.insert(name.clone(), k.clone());
                k
            }
        };
        pending += key.len() + value.len();
        sum.entries += 1;
        sum.bytes += (key.len() + value.len()) as u64;
        batch.insert(&ks, key, value);
        if pending >= RESTORE_BATCH_BYTES {
            std::mem::replace(&mut batch, db.batch()).commit()?;
            pending = 0;
        }
    }
    let want = ctx.finish();
    let mut tail = [0u8; 8 + 32];
    input
        .read_exact(&mut tail)
        .map_err(|_| StoreError("the backup file ends early (no trailer)".into()))?;
    if u64::from_be_bytes(tail[..8].try_into().unwrap_or_default()) != sum.entries {
        return Err(StoreError(
            "the backup file is damaged (entry count)".into(),
        ));
    }
    if &tail[8..] != want.as_ref() {
        return Err(StoreError(
            "the backup file is damaged (checksum mismatch); nothing was restored".into(),
        ));
    }
    batch.commit()?;
    store.mark_format()?;
    store.persist()?;
    Ok(sum)
}
