//! The core: the single-threaded state machine that owns the write path.
//!
//! It owns the HLC clock, the catalog, users and roles, per-origin cursors, LWW apply and the
//! shape of every committed transaction. It is a plain struct driven by [`Core::step`] with a
//! typed input and the current time; it reads existing records through [`StoreView`] and never
//! performs I/O itself: what to persist, whom to answer and what changed come out of
//! [`Core::take_ready`] (tikv/raft-rs's `Ready` idea). The driver (`node::driver`) commits the
//! writes of a whole group in one synced batch, *then* sends the replies, so an acknowledged write
//! is durable. Because nothing here touches clocks, sockets or threads, its rules are unit-tested
//! deterministically.
//!
//! Must never: block, read the wall clock, touch fjall or sockets, or reply before the driver has
//! committed what the reply describes.

pub(crate) mod attr_type;
pub mod auth;
pub mod catalog;
pub mod codec;
pub mod error;
pub mod hlc;
pub mod lww;
pub mod op;
pub mod records;
mod schema;
pub mod txn;

use crate::store::record::StoredRecord;
use crate::store::{StoreError, TableStats, Write};
use auth::AuthState;
use catalog::Catalog;
use error::OpResult;
use hlc::Hlc;
use op::WriteOp;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use txn::Txn;

/// Read access to committed records, as the core needs it. Implemented by the fjall store and by
/// an in-memory map in tests.
pub trait StoreView {
    fn get_record(&self, table: u32, pk: &[u8]) -> Result<Option<StoredRecord>, StoreError>;
}

impl StoreView for crate::store::Store {
    fn get_record(&self, table: u32, pk: &[u8]) -> Result<Option<StoredRecord>, StoreError> {
        crate::store::Store::get_record(self, table, pk)
    }
}

/// What the core is asked to do.
pub enum Input<R> {
    /// A validated write or admin operation from the operations API, made by `actor` (recorded
    /// in the transaction's audit entry).
    Write {
        op: WriteOp,
        actor: txn::Actor,
        reply: R,
    },
    /// Transactions received from a peer, in stream order. Applied atomically each, with the
    /// origin's version; the reply carries the per-origin versions now covered.
    Replicated { txns: Vec<Txn>, reply: R },
    /// A batch of rows of a full copy from a peer: merged by LWW with each row's own version and
    /// origin (no audit entry, cursors untouched), with the copy's resume state persisted in the
    /// same batch.
    CopyRows {
        db: String,
        table: CopyTable,
        rows: Vec<CopyRow>,
        /// Node-local key and value of the copy's resume state.
        state: (String, Vec<u8>),
        reply: R,
    },
    /// A full copy finished: cursors move to the copy's version vector (and past `peer`'s own
    /// origin so the copy is not repeated), the resume state is dropped.
    CopyDone {
        db: String,
        peer: String,
        vector: Vec<(String, u64)>,
        state_key: String,
        reply: R,
    },
    /// Databases a peer has (from a full copy of `system`): created here if missing, without
    /// logging (their creation belongs to the peers that made them).
    EnsureDatabases { names: Vec<String>, reply: R },
    /// Time passes: prunes the audit log past the retention horizon.
    Tick,
}

/// The schema of a table in a full copy.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyTable {
    pub name: String,
    pub pk_attr: String,
    pub attributes: Vec<(String, Option<String>)>,
    pub schema_defined: bool,
    /// The table's `expiration` (seconds), if any.
    pub expiration: Option<u64>,
}

/// One row of a full copy: the stored entry as the sender has it.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyRow {
    pub pk: Vec<u8>,
    pub version: u64,
    pub origin: String,
    /// None for a tombstone.
    pub json: Option<Vec<u8>>,
}

/// Everything a group of steps produced: commit `writes` (one batch, synced), then publish, then
/// send `replies`.
pub struct Ready<R> {
    pub writes: Vec<Write>,
    pub replies: Vec<(R, Reply)>,
    /// New catalog to publish to readers, if it changed.
    pub catalog: Option<Arc<Catalog>>,
    /// New users/roles to publish, if they changed.
    pub auth: Option<Arc<AuthState>>,
    /// Databases (by name) whose audit log received new transactions.
    pub committed_dbs: BTreeSet<String>,
    /// `system.hdb_nodes` changed (membership must be re-read).
    pub membership_changed: bool,
}

impl<R> Ready<R> {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.replies.is_empty()
    }
}

/// The answer to one input.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Op(OpResult),
    /// Replicated batch applied: for each origin, the highest version now applied.
    Applied(Vec<(String, u64)>),
}

/// State recovered from storage at start-up.
#[derive(Default)]
pub struct Recovered {
    pub catalog: Option<Catalog>,
    pub hlc_floor: u64,
    pub origins: Vec<(String, u32)>,
    pub cursors: Vec<(u32, u32, u64)>,
    pub table_stats: HashMap<u32, TableStats>,
    pub auth: AuthState,
}

/// Node-local ids of origin node names (records store the id; LWW compares the names).
#[derive(Default)]
struct Origins {
    by_name: HashMap<String, u32>,
    by_id: HashMap<u32, String>,
    next: u32,
}

impl Origins {
    fn name(&self, id: u32) -> &str {
        self.by_id.get(&id).map(String::as_str).unwrap_or("")
    }
}

pub struct Core<R> {
    node_name: String,
    self_origin: u32,
    hlc: Hlc,
    catalog: Arc<Catalog>,
    auth: Arc<AuthState>,
    origins: Origins,
    /// db id → origin id → highest version applied (the version vector per database).
    cursors: HashMap<u32, HashMap<u32, u64>>,
    stats: HashMap<u32, TableStats>,
    /// Writes of the current group that are not committed yet: reads inside the group must see
    /// them (two requests writing one key in one group). Maps a key to its `Write::Record` in
    /// `writes`, so records are not copied a second time.
    overlay: HashMap<(u32, Vec<u8>), usize>,
    writes: Vec<Write>,
    replies: Vec<(R, Reply)>,
    dirty_stats: BTreeSet<u32>,
    dirty_cursors: BTreeSet<(u32, u32)>,
    catalog_dirty: bool,
    auth_dirty: bool,
    hlc_persisted: u64,
    committed_dbs: BTreeSet<String>,
    membership_dirty: bool,
    retention_ms: Option<u64>,
    last_prune_ms: u64,
    /// Who made the write being executed (recorded in its audit entry).
    actor: txn::Actor,
    limits: Limits,
}

/// Bounds on what one request may make the core do (from `storage.*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_attributes_per_table: usize,
    pub max_new_attributes_per_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_attributes_per_table: 10_000,
            max_new_attributes_per_request: 1_000,
        }
    }
}

impl<R> Core<R> {
    pub fn new(node_name: &str, rec: Recovered) -> Self {
        let mut origins = Origins::default();
        for (name, id) in rec.origins {
            origins.next = origins.next.max(id + 1);
            origins.by_id.insert(id, name.clone());
            origins.by_name.insert(name, id);
        }
        let mut cursors: HashMap<u32, HashMap<u32, u64>> = HashMap::new();
        for (db, origin, v) in rec.cursors {
            cursors.entry(db).or_default().insert(origin, v);
        }
        let fresh_catalog = rec.catalog.is_none();
        let mut catalog = rec.catalog.unwrap_or_else(Catalog::with_system);
        // A store written by an older release lacks the newer system tables.
        let upgraded = catalog.ensure_system_tables();
        let mut core = Core {
            node_name: node_name.to_string(),
            self_origin: 0,
            hlc: Hlc::new(rec.hlc_floor),
            catalog: Arc::new(catalog),
            auth: Arc::new(rec.auth),
            origins,
            cursors,
            stats: rec.table_stats,
            overlay: HashMap::new(),
            writes: Vec::new(),
            replies: Vec::new(),
            dirty_stats: BTreeSet::new(),
            dirty_cursors: BTreeSet::new(),
            catalog_dirty: fresh_catalog || upgraded,
            auth_dirty: false,
            hlc_persisted: rec.hlc_floor,
            committed_dbs: BTreeSet::new(),
            membership_dirty: false,
            retention_ms: None,
            last_prune_ms: 0,
            actor: txn::Actor::None,
            limits: Limits::default(),
        };
        core.self_origin = core.origin_id(node_name);
        core
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn auth(&self) -> &Arc<AuthState> {
        &self.auth
    }

    /// The version vector of a database: origin name → highest applied version.
    pub fn cursor_vector(&self, db: &str) -> Vec<(String, u64)> {
        let Some(d) = self.catalog.database(db) else {
            return Vec::new();
        };
        let mut v: Vec<(String, u64)> = self
            .cursors
            .get(&d.id)
            .map(|m| {
                m.iter()
                    .map(|(o, v)| (self.origins.name(*o).to_string(), *v))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The id of an origin name, allocated (and persisted with this group) on first sight.
    fn origin_id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.origins.by_name.get(name) {
            return *id;
        }
        let id = self.origins.next;
        self.origins.next += 1;
        self.origins.by_name.insert(name.to_string(), id);
        self.origins.by_id.insert(id, name.to_string());
        self.writes.push(Write::Origin {
            name: name.to_string(),
            id,
        });
        id
    }

    /// Applies one input. A storage read error is returned as-is: the driver stops the node.
    pub fn step(
        &mut self,
        input: Input<R>,
        now_ms: u64,
        store: &dyn StoreView,
    ) -> Result<(), StoreError> {
        match input {
            Input::Write { op, actor, reply } => {
                self.actor = actor;
                let result = self.execute(op, now_ms, store);
                self.actor = txn::Actor::None;
                let result = result?;
                self.replies.push((reply, Reply::Op(result)));
            }
            Input::Replicated { txns, reply } => {
                let mut covered: HashMap<String, u64> = HashMap::new();
                for txn in txns {
                    let origin = txn.origin.clone();
                    let version = txn.version;
                    self.apply_remote(txn, store)?;
                    let e = covered.entry(origin).or_insert(0);
                    *e = (*e).max(version);
                }
                let mut covered: Vec<_> = covered.into_iter().collect();
                covered.sort();
                self.replies.push((reply, Reply::Applied(covered)));
            }
            Input::CopyRows {
                db,
                table,
                rows,
                state,
                reply,
            } => {
                let n = rows.len() as u64;
                self.apply_copy_rows(&db, &table, rows, store)?;
                self.writes.push(Write::Local {
                    key: state.0,
                    value: Some(state.1),
                });
                self.replies
                    .push((reply, Reply::Applied(vec![(table.name, n)])));
            }
            Input::CopyDone {
                db,
                peer,
                vector,
                state_key,
                reply,
            } => {
                self.finish_copy(&db, &peer, &vector);
                self.writes.push(Write::Local {
                    key: state_key,
                    value: None,
                });
                self.replies.push((reply, Reply::Applied(vector)));
            }
            Input::EnsureDatabases { names, reply } => {
                for name in names {
                    if Arc::make_mut(&mut self.catalog).ensure_database(&name) {
                        self.mark_catalog_changed();
                    }
                }
                self.replies.push((reply, Reply::Applied(Vec::new())));
            }
            Input::Tick => self.prune(now_ms),
        }
        Ok(())
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Sets how long audit entries are kept (`replication.auditRetention`).
    pub fn set_retention(&mut self, retention_ms: u64) {
        self.retention_ms = Some(retention_ms);
    }

    /// Drops audit entries older than the retention horizon, at most every tenth of it (and at
    /// least once a minute). A peer whose cursor falls behind the horizon gets a full copy.
    fn prune(&mut self, now_ms: u64) {
        let Some(retention) = self.retention_ms else {
            return;
        };
        let every = (retention / 10).clamp(1_000, 60_000);
        if now_ms < self.last_prune_ms + every {
            return;
        }
        self.last_prune_ms = now_ms;
        let Some(horizon_ms) = now_ms.checked_sub(retention) else {
            return;
        };
        let before = hlc::from_ms(horizon_ms);
        for d in self.catalog.databases.values() {
            let origins: Vec<u32> = self
                .cursors
                .get(&d.id)
                .map(|m| m.keys().copied().collect())
                .unwrap_or_default();
            if !origins.is_empty() {
                self.writes.push(Write::PruneAudit {
                    db: d.id,
                    origins,
                    before,
                });
            }
        }
    }

    /// Applies audit-log edits of `db` and raises each touched origin's low watermark to the
    /// newest version edited: this node's log of that origin is no longer complete below it.
    fn trim_audit(&mut self, db: &str, edits: Vec<op::AuditEdit>) -> OpResult {
        let Some(db_id) = self.catalog.database(db).map(|d| d.id) else {
            return Err(error::OpError::database_not_found(db));
        };
        let mut newest: HashMap<u32, u64> = HashMap::new();
        let n = edits.len();
        for e in edits {
            let v = newest.entry(e.origin).or_insert(0);
            *v = (*v).max(e.version);
            self.writes.push(Write::AuditEdit {
                db: db_id,
                origin: e.origin,
                version: e.version,
                ops: e.ops,
            });
        }
        let mut newest: Vec<_> = newest.into_iter().collect();
        newest.sort();
        for (origin, version) in newest {
            self.writes.push(Write::LowWatermark {
                db: db_id,
                origin,
                version,
            });
        }
        Ok(serde_json::json!({ "message": format!("{n} audit entries trimmed") }))
    }

    /// Moves cursors to a finished copy's version vector. Where a cursor jumps, this node's log
    /// of that origin now has a hole below the jump: the low watermark records it, so this node
    /// never relays that origin from below it (a peer asking gets a full copy instead).
    fn finish_copy(&mut self, db: &str, peer: &str, vector: &[(String, u64)]) {
        let Some(db_id) = self.catalog.database(db).map(|d| d.id) else {
            return;
        };
        for (origin, version) in vector {
            if origin == &self.node_name {
                continue;
            }
            let o = self.origin_id(origin);
            let current = self
                .cursors
                .get(&db_id)
                .and_then(|m| m.get(&o))
                .copied()
                .unwrap_or(0);
            if *version > current {
                self.advance_cursor(db_id, o, *version);
                self.writes.push(Write::LowWatermark {
                    db: db_id,
                    origin: o,
                    version: *version,
                });
            }
            self.hlc.observe(*version);
        }
        // Version 1 precedes every real version: "copied from this peer", so a peer that never
        // wrote to the database is not copied again on every reconnect (Harper #622).
        if peer != self.node_name {
            let p = self.origin_id(peer);
            self.advance_cursor(db_id, p, 1);
        }
    }

    fn execute(
        &mut self,
        op: WriteOp,
        now_ms: u64,
        store: &dyn StoreView,
    ) -> Result<OpResult, StoreError> {
        match op {
            WriteOp::CreateDatabase { database } => Ok(self.create_database(&database, now_ms)),
            WriteOp::DropDatabase {
                database,
                replicated,
            } => Ok(self.drop_database(&database, replicated, now_ms)),
            WriteOp::CreateTable {
                database,
                table,
                primary_key,
                attributes,
                schema_defined,
                expiration,
            } => Ok(self.create_table(
                &database,
                &table,
                &primary_key,
                attributes,
                schema_defined,
                expiration,
                now_ms,
            )),
            WriteOp::Evict {
                database,
                table,
                pks,
            } => self.evict(&database, &table, &pks, now_ms, store),
            WriteOp::DropTable {
                database,
                table,
                replicated,
            } => Ok(self.drop_table(&database, &table, replicated, now_ms)),
            WriteOp::CreateAttribute {
                database,
                table,
                attribute,
            } => Ok(self.create_attribute(&database, &table, &attribute, now_ms)),
            WriteOp::DropAttribute {
                database,
                table,
                attribute,
            } => Ok(self.drop_attribute(&database, &table, &attribute, now_ms)),
            WriteOp::Records {
                kind,
                database,
                table,
                records,
            } => self.write_records(kind, &database, &table, records, now_ms, store),
            WriteOp::Delete {
                database,
                table,
                ids,
            } => self.delete_records(&database, &table, &ids, now_ms, store),
            WriteOp::AddUser {
                username,
                password_hash,
                role,
                active,
            } => self.add_user(&username, &password_hash, &role, active, now_ms, store),
            WriteOp::AlterUser {
                username,
                password_hash,
                role,
                active,
            } => self.alter_user(&username, password_hash, role, active, now_ms, store),
            WriteOp::DropUser { username } => self.drop_user(&username, now_ms, store),
            WriteOp::AddRole {
                role,
                id,
                permission,
            } => self.add_role(&role, id, permission, now_ms, store),
            WriteOp::AlterRole {
                id,
                role,
                permission,
            } => self.alter_role(&id, role, permission, now_ms, store),
            WriteOp::DropRole { id } => self.drop_role(&id, now_ms, store),
            WriteOp::SystemPut { table, record } => self.system_put(&table, record, now_ms, store),
            WriteOp::SystemDelete { table, key } => self.system_delete(&table, &key, now_ms, store),
            WriteOp::Membership { changes } => self.membership(changes, now_ms, store),
            WriteOp::SetLocal { key, value } => {
                self.writes.push(Write::Local { key, value });
                Ok(Ok(serde_json::json!({ "message": "ok" })))
            }
            WriteOp::TrimAudit { database, edits } => Ok(self.trim_audit(&database, edits)),
        }
    }

    /// Whether the last input stepped was a write that failed (its answer not yet handed
    /// over): the driver stops a chain of writes there.
    pub fn last_reply_failed(&self) -> bool {
        matches!(self.replies.last(), Some((_, Reply::Op(Err(_)))))
    }

    /// Hands over everything produced since the last call. The overlay is dropped: the driver
    /// commits these writes before the next `step`, so later reads find them in the store.
    pub fn take_ready(&mut self) -> Ready<R> {
        if self.hlc.last() > self.hlc_persisted {
            self.hlc_persisted = self.hlc.last();
            self.writes.push(Write::HlcFloor(self.hlc_persisted));
        }
        for table in std::mem::take(&mut self.dirty_stats) {
            if let Some(stats) = self.stats.get(&table) {
                self.writes.push(Write::TableStats {
                    table,
                    stats: *stats,
                });
            }
        }
        for (db, origin) in std::mem::take(&mut self.dirty_cursors) {
            if let Some(version) = self.cursors.get(&db).and_then(|m| m.get(&origin)) {
                self.writes.push(Write::Cursor {
                    db,
                    origin,
                    version: *version,
                });
            }
        }
        let catalog = if std::mem::take(&mut self.catalog_dirty) {
            match serde_json::to_vec(&*self.catalog) {
                Ok(json) => self.writes.push(Write::Catalog(json)),
                Err(e) => log::error!("cannot serialise the catalog: {e}"),
            }
            Some(self.catalog.clone())
        } else {
            None
        };
        let auth = std::mem::take(&mut self.auth_dirty).then(|| self.auth.clone());
        self.overlay.clear();
        Ready {
            writes: std::mem::take(&mut self.writes),
            replies: std::mem::take(&mut self.replies),
            catalog,
            auth,
            committed_dbs: std::mem::take(&mut self.committed_dbs),
            membership_changed: std::mem::take(&mut self.membership_dirty),
        }
    }

    fn mark_catalog_changed(&mut self) {
        self.catalog_dirty = true;
    }

    /// Reads a record as the group sees it: uncommitted writes first, then the store.
    fn read(
        &self,
        store: &dyn StoreView,
        table: u32,
        pk: &[u8],
    ) -> Result<Option<StoredRecord>, StoreError> {
        if let Some(&i) = self.overlay.get(&(table, pk.to_vec())) {
            if let Some(Write::Record { record, .. }) = self.writes.get(i) {
                return Ok(Some(record.clone()));
            }
        }
        store.get_record(table, pk)
    }

    /// Appends a committed transaction (its encoded ops) to the audit log and advances the
    /// origin's cursor.
    fn log_txn(&mut self, db: &str, db_id: u32, origin_id: u32, version: u64, ops: Vec<u8>) {
        self.writes.push(Write::Audit {
            db: db_id,
            origin: origin_id,
            version,
            ops,
        });
        self.advance_cursor(db_id, origin_id, version);
        if !self.committed_dbs.contains(db) {
            self.committed_dbs.insert(db.to_string());
        }
    }

    fn advance_cursor(&mut self, db_id: u32, origin_id: u32, version: u64) {
        let entry = self
            .cursors
            .entry(db_id)
            .or_default()
            .entry(origin_id)
            .or_insert(0);
        if version > *entry {
            *entry = version;
            self.dirty_cursors.insert((db_id, origin_id));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
