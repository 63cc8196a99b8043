//! Storage on fjall: records, secondary indexes, the audit log and node-local metadata.
//!
//! Owns every byte layout on disk and is the only module that touches fjall. The core decides
//! *what* to write (a [`WriteSet`] of typed writes); this module decides *how* and commits a
//! group as one atomic fjall batch with one sync. Readers (HTTP workers, replication senders)
//! read concurrently through the same handle; fjall supports one writer plus many readers.
//!
//! Layout:
//! - keyspace `meta`: catalog, HLC floor, origin-name ids, per-origin cursors, table stats, secrets;
//! - keyspace `audit`: `db id ‖ origin id ‖ version` → encoded transaction ops, so "everything
//!   origin X committed in database D after version v" is one range scan;
//! - keyspaces `d<table id>` (primary key → [`record::StoredRecord`]) and `i<table id>`
//!   (`attribute id ‖ value ‖ primary key` → empty) per table.
//!
//! Storage I/O errors are returned to the caller; the write path treats any of them as fatal
//! (fjall's advice: after a failed write the only safe move is to stop and recover on restart).

pub mod backup;
pub mod digest;
pub mod keys;
pub mod record;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use record::StoredRecord;
use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage error: {}", self.0)
    }
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        match e {
            // fjall poisons itself when a background flush or compaction (or an fsync) fails;
            // its own message says only "Poisoned", the cause is in the log line before.
            fjall::Error::Poisoned => StoreError(
                "the store refuses writes after a background write failed (disk full or an I/O error; the log says which)"
                    .into(),
            ),
            e => StoreError(e.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Bytes read from the store, shared with fjall's block cache (no copy); callers outside
/// `store/` name it through this alias so fjall stays an implementation detail here.
pub type Slice = fjall::Slice;

/// How far a commit must reach before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fdatasync: survives power loss. The default; acknowledged writes are on disk.
    Sync,
    /// write() to the OS: survives a process crash (kill -9), not a power loss.
    Buffer,
}

/// One typed write. The core emits these; [`Store::commit`] lays them out.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Record {
        table: u32,
        pk: Vec<u8>,
        record: StoredRecord,
    },
    IndexPut {
        table: u32,
        key: Vec<u8>,
    },
    IndexDel {
        table: u32,
        key: Vec<u8>,
    },
    Audit {
        db: u32,
        origin: u32,
        version: u64,
        ops: Vec<u8>,
    },
    Catalog(Vec<u8>),
    HlcFloor(u64),
    Origin {
        name: String,
        id: u32,
    },
    Cursor {
        db: u32,
        origin: u32,
        version: u64,
    },
    TableStats {
        table: u32,
        stats: TableStats,
    },
    /// Node-local metadata that is not part of the replicated state (token secret, copy cursors).
    Local {
        key: String,
        value: Option<Vec<u8>>,
    },
    /// Remove every index entry of one attribute (drop_attribute).
    DropIndexAttribute {
        table: u32,
        attribute: u32,
    },
    /// Remove a table's keyspaces once the batch that drops it from the catalog has committed.
    DropTableStorage {
        table: u32,
    },
    /// Remove a database's audit entries and cursors (drop_database).
    DropDatabaseLog {
        db: u32,
    },
    /// Remove audit entries of these origins of `db` with a version below `before`, raising
    /// each origin's low watermark to the newest version removed.
    PruneAudit {
        db: u32,
        origins: Vec<u32>,
        before: u64,
    },
    /// Index every stored record that has `name` under attribute id `attribute` (an attribute
    /// created on a table that already holds records with that property, e.g. re-created after
    /// drop_attribute). Index entries are only ever a superset hint: searches re-check records.
    BackfillIndex {
        table: u32,
        attribute: u32,
        name: String,
    },
    /// Replace (Some) or remove (None) one audit entry, if it is still there (never resurrects
    /// an entry that retention pruned meanwhile).
    AuditEdit {
        db: u32,
        origin: u32,
        version: u64,
        ops: Option<Vec<u8>>,
    },
    /// This node's log of `origin` in `db` is complete only above `version` (after a full copy).
    LowWatermark {
        db: u32,
        origin: u32,
        version: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// Live records (tombstones excluded).
    pub count: u64,
    /// Highest version written to the table.
    pub last_version: u64,
    /// Bytes of the live records (JSON text), kept by the core with every write: the size of a
    /// table whose data still sits in memtables, which fjall's disk space does not count yet.
    pub bytes: u64,
    /// Order-independent digest of the live records ([`digest`]); None when the statistics
    /// were written before digests existed (start-up recomputes it by scanning the table).
    pub digest: Option<u128>,
}

impl Default for TableStats {
    /// The statistics of an empty table (whose digest is known: zero).
    fn default() -> Self {
        TableStats {
            count: 0,
            last_version: 0,
            bytes: 0,
            digest: Some(0),
        }
    }
}

impl TableStats {
    /// 24 bytes, plus 16 of digest when it is known. A binary from before digests reads the
    /// first 24 and writes 24 back, which reads here as "digest unknown": downgrading and
    /// upgrading again recomputes it instead of trusting a stale one.
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(40);
        b.extend_from_slice(&self.count.to_be_bytes());
        b.extend_from_slice(&self.last_version.to_be_bytes());
        b.extend_from_slice(&self.bytes.to_be_bytes());
        if let Some(d) = self.digest {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }
    /// Reads every layout (16 bytes before `bytes` existed, 24 before `digest`).
    fn decode(b: &[u8]) -> Option<Self> {
        Some(TableStats {
            count: u64::from_be_bytes(b.get(..8)?.try_into().ok()?),
            last_version: u64::from_be_bytes(b.get(8..16)?.try_into().ok()?),
            bytes: b
                .get(16..24)
                .and_then(|x| x.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0),
            digest: b
                .get(24..40)
                .and_then(|x| x.try_into().ok())
                .map(u128::from_be_bytes),
        })
    }
}

/// Everything the core needs at start-up, read back from `meta`.
#[derive(Debug, Default)]
pub struct Recovered {
    pub catalog_json: Option<Vec<u8>>,
    pub hlc_floor: u64,
    pub origins: Vec<(String, u32)>,
    pub cursors: Vec<(u32, u32, u64)>,
    pub table_stats: HashMap<u32, TableStats>,
}

const META_CATALOG: &[u8] = b"cat";
const META_HLC: &[u8] = b"hlc";
const META_ORIGIN: u8 = b'o';
const META_CURSOR: u8 = b'c';
const META_STATS: u8 = b's';
const META_LOCAL: u8 = b'l';
const META_LOW_WATERMARK: u8 = b'w';
const META_FORMAT: &[u8] = b"fmt";

/// The on-disk layout this binary writes. A store without the key was written before it
/// existed, in the same layout as format 1; a higher number is refused at open (a newer
/// Skerry wrote it: downgrading is not supported). Format 2: audit entries carry the write
/// kind (`core::txn` ops format 3), which a format-1 binary cannot decode; format-1 stores
/// open as they are (their entries stay readable) and are marked 2.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Clone)]
struct TableSpaces {
    data: Keyspace,
    index: Keyspace,
}

struct Inner {
    db: Database,
    /// Options for every keyspace we create (bounded memtables).
    ks_opts: KeyspaceCreateOptions,
    meta: Keyspace,
    audit: Keyspace,
    /// Keyspace handles by table id. fjall's own `keyspace()` lookup takes a write lock, so
    /// readers use this read-mostly cache instead.
    tables: RwLock<HashMap<u32, TableSpaces>>,
}

/// A cheap, cloneable handle to the node's storage.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Options for opening the store (from the `storage.*` config keys).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub cache_size: u64,
    pub max_write_buffer_size: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_size: 32 << 20,
            max_write_buffer_size: 64 << 20,
        }
    }
}

/// Makes `root` and everything under it owner-only (folders 0700, files 0600): a store created
/// by an older release, or copied in by hand, may be world-readable, and it holds the token
/// secret and password hashes. Says so when it had to tighten anything.
fn owner_only(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut tightened = 0usize;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p)
            .map_err(|e| StoreError(format!("cannot read {}: {e}", p.display())))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & want))
                .map_err(|e| StoreError(format!("cannot restrict {}: {e}", p.display())))?;
            tightened += 1;
        }
        if meta.is_dir() {
            let entries = std::fs::read_dir(&p)
                .map_err(|e| StoreError(format!("cannot read {}: {e}", p.display())))?;
            for e in entries.flatten() {
                stack.push(e.path());
            }
        }
    }
    if tightened > 0 {
        log::warn!(
            "{} was readable by other users: made {tightened} files and folders owner-only (0700/0600)",
            root.display()
        );
    }
    Ok(())
}

/// Makes the entries naming the store durable: a directory entry survives a power cut only once
/// its parent directory is synced. fjall syncs inside `db/`; this syncs rootPath (its `db` entry)
/// and then each parent (rootPath itself and any folder created with it, e.g. by the log file),
/// or a power cut right after the first acknowledged write could lose the whole data folder
/// (tests/powerloss.rs). The parents are best effort: a folder we may not open (an
/// administrator's `/var`) was not created by us.
fn sync_dir_chain(root: &Path) -> Result<()> {
    let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
    sync(root).map_err(|e| StoreError(format!("cannot sync {}: {e}", root.display())))?;
    let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    for parent in abs.ancestors().skip(1) {
        if let Err(e) = sync(parent) {
            log::debug!("cannot sync {}: {e}", parent.display());
        }
    }
    Ok(())
}

impl Store {
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<Store> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", path.display())))?;
        owner_only(path)?;
        // `max_write_buffer_size` is marked deprecated ("todo") upstream but is the only bound on
        // total memtable memory; without it RSS grows with the number of tables written.
        #[allow(deprecated)]
        let db = Database::builder(path.join("db"))
            .cache_size(opts.cache_size)
            .max_write_buffer_size(Some(opts.max_write_buffer_size))
            .open()
            .map_err(|e| {
                if e.to_string().contains("Locked") {
                    StoreError(format!(
                        "another skerry process is using this rootPath ({}): stop it, or give this node its own rootPath",
                        path.display()
                    ))
                } else {
                    StoreError::from(e)
                }
            })?;
        sync_dir_chain(path)?;
        // fjall's default memtable is 64 MiB per keyspace, and fjall 3.1 does not enforce its
        // global write-buffer limit; a bulk load keeps three keyspaces hot (records, indexes,
        // audit log), so an eighth of `storage.maxWriteBufferSize` each bounds memtables to
        // about half of it plus flushes in flight (measured: RSS after 1M records 280 -> 220 MB
        // before allocator tuning, same throughput).
        let memtable = (opts.max_write_buffer_size / 8).clamp(1 << 20, 64 << 20);
        let ks_opts = KeyspaceCreateOptions::default().max_memtable_size(memtable);
        let meta = db.keyspace("meta", || ks_opts.clone())?;
        let audit = db.keyspace("audit", || ks_opts.clone())?;
        if let Some(v) = meta.get(META_FORMAT)? {
            let format = v
                .as_ref()
                .try_into()
                .map(u32::from_be_bytes)
                .unwrap_or(u32::MAX);
            if format > FORMAT_VERSION {
                return Err(StoreError(format!(
                    "the store in {} was written by a newer Skerry (store format {format}); this binary reads formats up to {FORMAT_VERSION}: run the newer version, or restore a backup",
                    path.display()
                )));
            }
        }
        let store = Store {
            inner: Arc::new(Inner {
                db,
                ks_opts,
                meta,
                audit,
                tables: RwLock::new(HashMap::new()),
            }),
        };
        store.mark_format()?;
        Ok(store)
    }

    /// Records this binary's store format (a store from before versioning has the same
    /// layout as format 1, so this is its upgrade).
    pub fn mark_format(&self) -> Result<()> {
        let current = self.inner.meta.get(META_FORMAT)?;
        if current.as_deref() != Some(&FORMAT_VERSION.to_be_bytes()[..]) {
            self.inner
                .meta
                .insert(META_FORMAT, FORMAT_VERSION.to_be_bytes())?;
        }
        Ok(())
    }

    /// The store format recorded in the store.
    pub fn format(&self) -> Result<Option<u32>> {
        Ok(self
            .inner
            .meta
            .get(META_FORMAT)?
            .and_then(|v| v.as_ref().try_into().ok().map(u32::from_be_bytes)))
    }

    /// Reads back the persisted core state.
    pub fn recover(&self) -> Result<Recovered> {
        let m = &self.inner.meta;
        let mut r = Recovered {
            catalog_json: m.get(META_CATALOG)?.map(|v| v.to_vec()),
            hlc_floor: m
                .get(META_HLC)?
                .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0),
            ..Recovered::default()
        };
        for kv in m.prefix([META_ORIGIN]) {
            let (k, v) = kv.into_inner()?;
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            if let Ok(id) = v.as_ref().try_into().map(u32::from_be_bytes) {
                r.origins.push((name, id));
            }
        }
        for kv in m.prefix([META_CURSOR]) {
            let (k, v) = kv.into_inner()?;
            if let Some(cursor) = decode_cursor(&k, &v) {
                r.cursors.push(cursor);
            }
        }
        for kv in m.prefix([META_STATS]) {
            let (k, v) = kv.into_inner()?;
            if k.len() == 5 {
                let table = u32::from_be_bytes(k[1..5].try_into().unwrap_or_default());
                if let Some(s) = TableStats::decode(&v) {
                    r.table_stats.insert(table, s);
                }
            }
        }
        Ok(r)
    }

    /// Node-local metadata by name.
    pub fn local(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.meta.get(local_key(key))?.map(|v| v.to_vec()))
    }

    fn spaces(&self, table: u32) -> Result<TableSpaces> {
        if let Some(s) = self
            .inner
            .tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&table)
        {
            return Ok(s.clone());
        }
        let spaces = TableSpaces {
            data: self
                .inner
                .db
                .keyspace(&format!("d{table}"), || self.inner.ks_opts.clone())?,
            index: self
                .inner
                .db
                .keyspace(&format!("i{table}"), || self.inner.ks_opts.clone())?,
        };
        self.inner
            .tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table, spaces.clone());
        Ok(spaces)
    }

    fn cached_spaces<'a>(
        &self,
        handles: &'a mut HashMap<u32, TableSpaces>,
        table: u32,
    ) -> Result<&'a TableSpaces> {
        match handles.entry(table) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => Ok(e.insert(self.spaces(table)?)),
        }
    }

    /// Applies a group of writes as ONE atomic fjall batch, synced per `durability`, then does
    /// the post-commit storage drops. Returns only once the batch is durable.
    pub fn commit(&self, writes: &[Write], durability: Durability) -> Result<()> {
        let mut batch = self.inner.db.batch().durability(Some(match durability {
            Durability::Sync => PersistMode::SyncData,
            Durability::Buffer => PersistMode::Buffer,
        }));
        let mut drops = Vec::new();
        // Keyspace handles of the tables this group touches: looked up once per table, not
        // once per write (a group of 1,000 records has ~9,000 writes).
        let mut handles: HashMap<u32, TableSpaces> = HashMap::new();
        // Low watermarks raised earlier in this batch: a later, lower raise of the same key
        // must not overwrite them (the batch keeps the last insert of a key).
        let mut watermarks: HashMap<Vec<u8>, u64> = HashMap::new();
        for w in writes {
            match w {
                Write::Record { table, pk, record } => {
                    let s = self.cached_spaces(&mut handles, *table)?;
                    batch.insert(&s.data, pk.as_slice(), record.encode());
                }
                Write::IndexPut { table, key } => {
                    let s = self.cached_spaces(&mut handles, *table)?;
                    batch.insert(&s.index, key.as_slice(), []);
                }
                Write::IndexDel { table, key } => {
                    let s = self.cached_spaces(&mut handles, *table)?;
                    batch.remove(&s.index, key.as_slice());
                }
                Write::Audit {
                    db,
                    origin,
                    version,
                    ops,
                } => {
                    batch.insert(
                        &self.inner.audit,
                        audit_key(*db, *origin, *version),
                        ops.as_slice(),
                    );
                }
                Write::Catalog(json) => {
                    batch.insert(&self.inner.meta, META_CATALOG, json.as_slice())
                }
                Write::HlcFloor(v) => batch.insert(&self.inner.meta, META_HLC, v.to_be_bytes()),
                Write::Origin { name, id } => {
                    let mut k = vec![META_ORIGIN];
                    k.extend_from_slice(name.as_bytes());
                    batch.insert(&self.inner.meta, k, id.to_be_bytes());
                }
                Write::Cursor {
                    db,
                    origin,
                    version,
                } => batch.insert(
                    &self.inner.meta,
                    cursor_key(*db, *origin),
                    version.to_be_bytes(),
                ),
                Write::TableStats { table, stats } => {
                    let mut k = vec![META_STATS];
                    k.extend_from_slice(&table.to_be_bytes());
                    batch.insert(&self.inner.meta, k, stats.encode());
                }
                Write::Local { key, value } => match value {
                    Some(v) => batch.insert(&self.inner.meta, local_key(key), v.as_slice()),
                    None => batch.remove(&self.inner.meta, local_key(key)),
                },
                Write::DropIndexAttribute { table, attribute } => {
                    let s = self.spaces(*table)?;
                    for kv in s.index.prefix(attribute.to_be_bytes()) {
                        batch.remove(&s.index, kv.key()?);
                    }
                }
                Write::DropDatabaseLog { db } => {
                    for kv in self.inner.audit.prefix(db.to_be_bytes()) {
                        batch.remove(&self.inner.audit, kv.key()?);
                    }
                    let mut p = vec![META_CURSOR];
                    p.extend_from_slice(&db.to_be_bytes());
                    for kv in self.inner.meta.prefix(p) {
                        batch.remove(&self.inner.meta, kv.key()?);
                    }
                }
                Write::PruneAudit {
                    db,
                    origins,
                    before,
                } => {
                    for origin in origins {
                        let range = audit_key(*db, *origin, 0)..audit_key(*db, *origin, *before);
                        let mut newest = 0;
                        for kv in self.inner.audit.range(range) {
                            let k = kv.key()?;
                            newest = newest.max(split_audit_key(&k).1);
                            batch.remove(&self.inner.audit, k);
                        }
                        if newest > 0 {
                            self.raise_low_watermark(
                                &mut batch,
                                &mut watermarks,
                                *db,
                                *origin,
                                newest,
                            )?;
                        }
                    }
                }
                Write::LowWatermark {
                    db,
                    origin,
                    version,
                } => {
                    self.raise_low_watermark(&mut batch, &mut watermarks, *db, *origin, *version)?
                }
                Write::AuditEdit {
                    db,
                    origin,
                    version,
                    ops,
                } => {
                    let key = audit_key(*db, *origin, *version);
                    if self.inner.audit.contains_key(key)? {
                        match ops {
                            Some(ops) => batch.insert(&self.inner.audit, key, ops.as_slice()),
                            None => batch.remove(&self.inner.audit, key),
                        }
                    }
                }
                Write::BackfillIndex {
                    table,
                    attribute,
                    name,
                } => {
                    let s = self.spaces(*table)?;
                    let mut entries = Vec::new();
                    for kv in s.data.iter() {
                        let (pk, raw) = kv.into_inner()?;
                        let Some(json) = StoredRecord::json_slice(&raw) else {
                            continue;
                        };
                        if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(json) {
                            if let Some(v) = m.get(name) {
                                keys::index_entries(*attribute, v, &pk, &mut entries);
                            }
                        }
                    }
                    for e in entries.drain(..) {
                        batch.insert(&s.index, e, []);
                    }
                }
                Write::DropTableStorage { table } => {
                    let mut k = vec![META_STATS];
                    k.extend_from_slice(&table.to_be_bytes());
                    batch.remove(&self.inner.meta, k);
                    drops.push(*table);
                }
            }
        }
        batch.commit()?;
        for table in drops {
            let spaces = self
                .inner
                .tables
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&table);
            let spaces = match spaces {
                Some(s) => s,
                None => self.spaces(table)?,
            };
            self.inner
                .tables
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&table);
            self.inner.db.delete_keyspace(spaces.data)?;
            self.inner.db.delete_keyspace(spaces.index)?;
        }
        Ok(())
    }

    fn raise_low_watermark(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        pending: &mut HashMap<Vec<u8>, u64>,
        db: u32,
        origin: u32,
        version: u64,
    ) -> Result<()> {
        let key = low_watermark_key(db, origin);
        let current = match pending.get(&key) {
            Some(v) => *v,
            None => self
                .inner
                .meta
                .get(&key)?
                .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0),
        };
        if version > current {
            batch.insert(&self.inner.meta, key.clone(), version.to_be_bytes());
            pending.insert(key, version);
        }
        Ok(())
    }

    /// This node's log of `origin` in `db` holds every transaction above this version only.
    pub fn low_watermark(&self, db: u32, origin: u32) -> Result<u64> {
        Ok(self
            .inner
            .meta
            .get(low_watermark_key(db, origin))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Writes every memtable out to disk tables and then retires the journal (graceful
    /// shutdown, no writes running), so the next start has nothing to replay. Flushing alone
    /// left the active journal (up to 64 MB: upstream fjall rotates only past that) to be
    /// decoded on the next open, one keyspace lookup per batch: 1.9-3.0 s to /ready with
    /// 1,000,000 records. `rotate_journal` is our patch in vendor/fjall (VENDORED.md).
    pub fn flush_memtables(&self) -> Result<()> {
        for name in self.inner.db.list_keyspace_names() {
            let ks = self
                .inner
                .db
                .keyspace(&name, || self.inner.ks_opts.clone())?;
            ks.rotate_memtable_and_wait()?;
        }
        self.inner.db.rotate_journal()?;
        Ok(())
    }

    /// Flushes everything to disk (shutdown).
    pub fn persist(&self) -> Result<()> {
        self.inner.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    // ----- reads -------------------------------------------------------------------------

    pub fn get_record(&self, table: u32, pk: &[u8]) -> Result<Option<StoredRecord>> {
        let s = self.spaces(table)?;
        Ok(s.data.get(pk)?.and_then(|v| StoredRecord::decode(&v)))
    }

    /// The raw stored value (header + JSON) for a key.
    pub fn get_raw(&self, table: u32, pk: &[u8]) -> Result<Option<fjall::Slice>> {
        let s = self.spaces(table)?;
        Ok(s.data.get(pk)?)
    }

    /// Every stored entry of a table in primary-key order, tombstones included, from a
    /// consistent snapshot, starting after `after` (exclusive) when given.
    pub fn scan_table(
        &self,
        table: u32,
        after: Option<&[u8]>,
    ) -> Result<impl Iterator<Item = Result<(fjall::Slice, fjall::Slice)>>> {
        let s = self.spaces(table)?;
        let iter = match after {
            Some(k) => s
                .data
                .range::<&[u8], _>((Bound::Excluded(k), Bound::Unbounded)),
            None => s.data.iter(),
        };
        Ok(iter.map(|g| g.into_inner().map_err(StoreError::from)))
    }

    /// Whether a table's index holds `key` (attribute id ‖ value ‖ primary key).
    pub fn index_has(&self, table: u32, key: &[u8]) -> Result<bool> {
        Ok(self.spaces(table)?.index.contains_key(key)?)
    }

    /// Every index key of a table, in order (the offline check).
    pub fn scan_index_all(&self, table: u32) -> Result<impl Iterator<Item = Result<fjall::Slice>>> {
        let s = self.spaces(table)?;
        Ok(s.index.iter().map(|g| g.key().map_err(StoreError::from)))
    }

    /// Every stored entry of a table, in descending primary-key order (`search_by_value` with
    /// `reverse`).
    pub fn scan_table_desc(
        &self,
        table: u32,
    ) -> Result<impl Iterator<Item = Result<(fjall::Slice, fjall::Slice)>>> {
        let s = self.spaces(table)?;
        Ok(s.data
            .iter()
            .rev()
            .map(|g| g.into_inner().map_err(StoreError::from)))
    }

    /// Index keys of one attribute within `[start, end)` (bounds are encoded values, without the
    /// attribute id), in order (descending with `reverse`). Each item is the full index key
    /// minus the attribute id: the encoded value followed by the encoded primary key.
    pub fn scan_index(
        &self,
        table: u32,
        attribute: u32,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Result<Box<dyn Iterator<Item = Result<Vec<u8>>> + Send>> {
        let s = self.spaces(table)?;
        let prefix = attribute.to_be_bytes();
        let with_prefix = |b: Bound<Vec<u8>>| -> Bound<Vec<u8>> {
            match b {
                Bound::Included(v) => Bound::Included([&prefix[..], &v].concat()),
                Bound::Excluded(v) => Bound::Excluded([&prefix[..], &v].concat()),
                Bound::Unbounded => Bound::Unbounded,
            }
        };
        let lo = match with_prefix(start) {
            Bound::Unbounded => Bound::Included(prefix.to_vec()),
            b => b,
        };
        let hi = match with_prefix(end) {
            Bound::Unbounded => match (attribute).checked_add(1) {
                Some(next) => Bound::Excluded(next.to_be_bytes().to_vec()),
                None => Bound::Unbounded,
            },
            b => b,
        };
        let key = |g: fjall::Guard| g.key().map(|k| k[4..].to_vec()).map_err(StoreError::from);
        let range = s.index.range((lo, hi));
        Ok(if reverse {
            Box::new(range.rev().map(key))
        } else {
            Box::new(range.map(key))
        })
    }

    /// Audit entries of `origin` in database `db` with version > `after`, oldest first.
    pub fn audit_after(
        &self,
        db: u32,
        origin: u32,
        after: u64,
    ) -> impl Iterator<Item = Result<(u64, fjall::Slice)>> {
        let lo = match after.checked_add(1) {
            Some(v) => audit_key(db, origin, v),
            None => audit_key(db, origin, u64::MAX),
        };
        let hi = match origin.checked_add(1) {
            Some(o) => Bound::Excluded(audit_key(db, o, 0)),
            None => Bound::Excluded(audit_key(db.saturating_add(1), 0, 0)),
        };
        let empty = after == u64::MAX;
        self.inner
            .audit
            .range((Bound::Included(lo), hi))
            .filter(move |_| !empty)
            .map(|g| {
                let (k, v) = g.into_inner()?;
                Ok((split_audit_key(&k).1, v))
            })
    }

    /// Every audit entry of database `db` (all origins), as (origin id, version, ops).
    pub fn audit_of_db(&self, db: u32) -> impl Iterator<Item = Result<(u32, u64, fjall::Slice)>> {
        self.inner.audit.prefix(db.to_be_bytes()).map(|g| {
            let (k, v) = g.into_inner()?;
            let (origin, version) = split_audit_key(&k);
            Ok((origin, version, v))
        })
    }

    /// The committed version vector of database `db`: origin name → highest applied version.
    pub fn cursor_vector(&self, db: u32) -> Result<HashMap<String, u64>> {
        let names = self.origin_names()?;
        let mut out = HashMap::new();
        let mut p = vec![META_CURSOR];
        p.extend_from_slice(&db.to_be_bytes());
        for kv in self.inner.meta.prefix(p) {
            let (k, v) = kv.into_inner()?;
            if let Some((_, o, ver)) = decode_cursor(&k, &v) {
                if let Some(name) = names.get(&o) {
                    out.insert(name.clone(), ver);
                }
            }
        }
        Ok(out)
    }

    /// Origin node names by their local id.
    pub fn origin_names(&self) -> Result<HashMap<u32, String>> {
        let mut out = HashMap::new();
        for kv in self.inner.meta.prefix([META_ORIGIN]) {
            let (k, v) = kv.into_inner()?;
            if let Ok(id) = v.as_ref().try_into().map(u32::from_be_bytes) {
                out.insert(id, String::from_utf8_lossy(&k[1..]).into_owned());
            }
        }
        Ok(out)
    }

    /// Table statistics as last committed (workers read these for describe_table).
    pub fn table_stats(&self, table: u32) -> Result<TableStats> {
        let mut k = vec![META_STATS];
        k.extend_from_slice(&table.to_be_bytes());
        Ok(self
            .inner
            .meta
            .get(k)?
            .and_then(|v| TableStats::decode(&v))
            .unwrap_or_default())
    }

    /// Bytes on disk of a table's records and of its indexes.
    pub fn table_disk_size(&self, table: u32) -> Result<(u64, u64)> {
        let s = self.spaces(table)?;
        Ok((s.data.disk_space(), s.index.disk_space()))
    }

    /// The audit log's written-out part (recent entries still in memory are not counted).
    pub fn audit_disk_size(&self) -> u64 {
        self.inner.audit.disk_space()
    }

    /// A consistent point-in-time view for multi-key reads (full copies).
    pub fn snapshot(&self) -> fjall::Snapshot {
        self.inner.db.snapshot()
    }

    /// The version vector of `db` as of `snap` (consistent with the snapshot's records, since
    /// cursors commit in the same batch as the data they cover).
    pub fn snapshot_cursor_vector(
        &self,
        snap: &fjall::Snapshot,
        db: u32,
    ) -> Result<HashMap<String, u64>> {
        let names = self.origin_names()?;
        let mut out = HashMap::new();
        let mut p = vec![META_CURSOR];
        p.extend_from_slice(&db.to_be_bytes());
        for kv in snap.prefix(&self.inner.meta, p) {
            let (k, v) = kv.into_inner()?;
            if let Some((_, o, ver)) = decode_cursor(&k, &v) {
                if let Some(name) = names.get(&o) {
                    out.insert(name.clone(), ver);
                }
            }
        }
        Ok(out)
    }

    /// Entries of a table as of `snap`, in key order, after `after` (exclusive) when given.
    pub fn snapshot_scan_table(
        &self,
        snap: &fjall::Snapshot,
        table: u32,
        after: Option<&[u8]>,
    ) -> Result<impl Iterator<Item = Result<(fjall::Slice, fjall::Slice)>>> {
        let s = self.spaces(table)?;
        let iter = match after {
            Some(k) => snap.range::<&[u8], _>(&s.data, (Bound::Excluded(k), Bound::Unbounded)),
            None => snap.iter(&s.data),
        };
        Ok(iter.map(|g| g.into_inner().map_err(StoreError::from)))
    }
}

fn audit_key(db: u32, origin: u32, version: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&db.to_be_bytes());
    k[4..8].copy_from_slice(&origin.to_be_bytes());
    k[8..].copy_from_slice(&version.to_be_bytes());
    k
}

/// (origin, version) of an audit key.
fn split_audit_key(k: &[u8]) -> (u32, u64) {
    let origin = k
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0);
    let version = k
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    (origin, version)
}

fn low_watermark_key(db: u32, origin: u32) -> Vec<u8> {
    let mut k = vec![META_LOW_WATERMARK];
    k.extend_from_slice(&db.to_be_bytes());
    k.extend_from_slice(&origin.to_be_bytes());
    k
}

fn cursor_key(db: u32, origin: u32) -> Vec<u8> {
    let mut k = vec![META_CURSOR];
    k.extend_from_slice(&db.to_be_bytes());
    k.extend_from_slice(&origin.to_be_bytes());
    k
}

/// A cursor entry (`META_CURSOR | db u32 | origin u32` → version u64) as (db, origin id,
/// version); `None` for an entry of another shape, which is skipped rather than misread.
fn decode_cursor(key: &[u8], value: &[u8]) -> Option<(u32, u32, u64)> {
    if key.len() != 9 {
        return None;
    }
    let db = u32::from_be_bytes(key.get(1..5)?.try_into().ok()?);
    let origin = u32::from_be_bytes(key.get(5..9)?.try_into().ok()?);
    let version = u64::from_be_bytes(value.try_into().ok()?);
    Some((db, origin, version))
}

fn local_key(key: &str) -> Vec<u8> {
    let mut k = vec![META_LOCAL];
    k.extend_from_slice(key.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        (dir, s)
    }

    #[test]
    fn committed_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            s.commit(
                &[
                    Write::Record {
                        table: 5,
                        pk: b"k".to_vec(),
                        record: StoredRecord {
                            version: 9,
                            origin: 1,
                            json: Some(b"{}".to_vec()),
                        },
                    },
                    Write::HlcFloor(99),
                    Write::Origin {
                        name: "n1".into(),
                        id: 1,
                    },
                    Write::Cursor {
                        db: 2,
                        origin: 1,
                        version: 9,
                    },
                    Write::TableStats {
                        table: 5,
                        stats: TableStats {
                            count: 1,
                            last_version: 9,
                            bytes: 42,
                            digest: Some(77),
                        },
                    },
                    Write::Catalog(b"{}".to_vec()),
                ],
                Durability::Sync,
            )
            .unwrap();
        }
        let s = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let r = s.recover().unwrap();
        assert_eq!(r.hlc_floor, 99);
        assert_eq!(r.origins, vec![("n1".to_string(), 1)]);
        assert_eq!(r.cursors, vec![(2, 1, 9)]);
        assert_eq!(r.table_stats[&5].count, 1);
        assert_eq!(r.table_stats[&5].bytes, 42);
        assert_eq!(r.table_stats[&5].digest, Some(77));
        // The layout before `bytes` existed still reads.
        assert_eq!(
            TableStats::decode(&[0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 7]),
            Some(TableStats {
                count: 3,
                last_version: 7,
                bytes: 0,
                digest: None,
            })
        );
        // Statistics written before digests existed: the digest is unknown, not zero.
        let mut old = [0u8; 24];
        old[7] = 3;
        assert_eq!(TableStats::decode(&old).and_then(|s| s.digest), None);
        assert_eq!(r.catalog_json.as_deref(), Some(&b"{}"[..]));
        assert_eq!(s.get_record(5, b"k").unwrap().unwrap().version, 9);
    }

    /// The journal files under `db/` that hold data (the active one is preallocated).
    fn journals(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("db"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".jnl"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_graceful_stop_leaves_no_journal_to_replay_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let written;
        {
            let s = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            let writes: Vec<Write> = (0..500u32)
                .map(|i| Write::Record {
                    table: 5,
                    pk: i.to_be_bytes().to_vec(),
                    record: StoredRecord {
                        version: u64::from(i) + 1,
                        origin: 1,
                        json: Some(b"{}".to_vec()),
                    },
                })
                .collect();
            s.commit(&writes, Durability::Sync).unwrap();
            written = journals(dir.path());
            s.flush_memtables().unwrap();
            // Every journal that held the writes is gone: the next open replays nothing.
            let after = journals(dir.path());
            assert!(
                written.iter().all(|j| !after.contains(j)),
                "journals {written:?} still there after the flush: {after:?}"
            );
        }
        let s = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        for i in [0u32, 250, 499] {
            let r = s.get_record(5, &i.to_be_bytes()).unwrap().unwrap();
            assert_eq!(r.version, u64::from(i) + 1);
        }
        // A second flush with nothing written is harmless.
        s.flush_memtables().unwrap();
        assert!(s.get_record(5, &7u32.to_be_bytes()).unwrap().is_some());
    }

    #[test]
    fn audit_after_returns_one_origins_suffix_in_version_order() {
        let (_d, s) = open();
        let mut w = Vec::new();
        for (origin, v) in [(1u32, 10u64), (1, 20), (1, 30), (2, 15), (0, 5)] {
            w.push(Write::Audit {
                db: 7,
                origin,
                version: v,
                ops: vec![origin as u8],
            });
        }
        w.push(Write::Audit {
            db: 8,
            origin: 1,
            version: 40,
            ops: vec![],
        });
        s.commit(&w, Durability::Buffer).unwrap();
        let got: Vec<u64> = s.audit_after(7, 1, 10).map(|r| r.unwrap().0).collect();
        assert_eq!(got, vec![20, 30]);
        let all: Vec<u64> = s.audit_after(7, 1, 0).map(|r| r.unwrap().0).collect();
        assert_eq!(all, vec![10, 20, 30]);
        assert_eq!(s.audit_after(7, 1, u64::MAX).count(), 0);
        assert_eq!(s.audit_after(7, u32::MAX, 0).count(), 0);
    }

    #[test]
    fn audit_edits_never_resurrect_and_watermarks_never_go_down_within_a_batch() {
        let (_d, s) = open();
        let audit = |db, origin, version: u64| Write::Audit {
            db,
            origin,
            version,
            ops: vec![version as u8],
        };
        s.commit(&[audit(1, 1, 10), audit(1, 1, 20)], Durability::Buffer)
            .unwrap();
        s.commit(
            &[
                Write::AuditEdit {
                    db: 1,
                    origin: 1,
                    version: 10,
                    ops: None,
                },
                Write::AuditEdit {
                    db: 1,
                    origin: 1,
                    version: 20,
                    ops: Some(vec![99]),
                },
                // Gone already (pruned): must stay gone.
                Write::AuditEdit {
                    db: 1,
                    origin: 1,
                    version: 15,
                    ops: Some(vec![7]),
                },
                Write::LowWatermark {
                    db: 1,
                    origin: 1,
                    version: 20,
                },
                Write::PruneAudit {
                    db: 1,
                    origins: vec![1],
                    before: 12,
                },
            ],
            Durability::Buffer,
        )
        .unwrap();
        let left: Vec<(u64, Vec<u8>)> = s
            .audit_after(1, 1, 0)
            .map(|r| r.map(|(v, o)| (v, o.to_vec())).unwrap())
            .collect();
        assert_eq!(left, vec![(20, vec![99])]);
        // The prune raised the watermark to 10 after the edit raised it to 20 in the same
        // batch: the higher one stands.
        assert_eq!(s.low_watermark(1, 1).unwrap(), 20);
    }

    #[test]
    fn index_scan_is_per_attribute_and_ordered() {
        let (_d, s) = open();
        let mut w = Vec::new();
        for (attr, val, pk) in [
            (1u32, 3.0, "a"),
            (1, 1.0, "b"),
            (2, 2.0, "c"),
            (1, 2.0, "d"),
        ] {
            let mut key = attr.to_be_bytes().to_vec();
            keys::encode_scalar(&serde_json::json!(val), &mut key);
            keys::encode_scalar(&serde_json::json!(pk), &mut key);
            w.push(Write::IndexPut { table: 3, key });
        }
        s.commit(&w, Durability::Buffer).unwrap();
        let pks: Vec<String> = s
            .scan_index(3, 1, Bound::Unbounded, Bound::Unbounded, false)
            .unwrap()
            .map(|k| {
                let k = k.unwrap();
                let n = keys::scalar_len(&k).unwrap();
                keys::decode_pk(&k[n..])
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(pks, ["b", "d", "a"]);
    }

    #[test]
    fn dropping_a_table_removes_its_records() {
        let (_d, s) = open();
        let rec = StoredRecord {
            version: 1,
            origin: 0,
            json: Some(b"{}".to_vec()),
        };
        s.commit(
            &[Write::Record {
                table: 4,
                pk: b"x".to_vec(),
                record: rec,
            }],
            Durability::Buffer,
        )
        .unwrap();
        s.commit(&[Write::DropTableStorage { table: 4 }], Durability::Buffer)
            .unwrap();
        assert!(s.get_record(4, b"x").unwrap().is_none());
    }
}
