//! Record writes: local insert/update/upsert/delete, users and roles, node-made system writes,
//! and the apply of replicated transactions. All of them end in [`Core::store_entry`], which keeps
//! records, secondary indexes, table statistics and the published users/roles in step.

use super::attr_type;
use super::auth::{permission_errors, role_from_record, SUPER_USER_ROLE};
use super::catalog::{
    invalid_name, TableDef, CREATED_TIME, HDB_NODES, HDB_ROLE, HDB_USER, SYSTEM_DB, UPDATED_TIME,
};
use super::error::{OpError, OpResult};
use super::hlc;
use super::lww::{self, Decision};
use super::op::{RecordBatch, WriteKind};
use super::txn::{OpsWriter, Txn, TxnKind, TxnOp};
use super::{Core, StoreView};
use crate::store::digest;
use crate::store::keys;
use crate::store::record::StoredRecord;
use crate::store::{StoreError, Write};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::Arc;

type StepResult = Result<OpResult, StoreError>;

/// Requests up to this much record text keep their records parsed between the validation
/// pass and the write pass; larger ones parse each record again instead of holding them all.
const KEEP_PARSED_BYTES: usize = 1 << 20;

/// The field older releases kept retained peer credentials in, inside the replicated
/// `hdb_nodes` row. Never stored any more, and stripped from rows that arrive with it.
const NODE_SECRET_FIELD: &str = "authorization";
/// A system-table write: storage errors outside, operation errors inside, the stored record and
/// its version on success.
type SystemWrite<T> = Result<Result<T, OpError>, StoreError>;

/// The index keys of one record, sorted and deduplicated: `attribute id ‖ value ‖ pk` for every
/// indexed, non-key attribute it has (array elements each; objects are not indexed).
/// The index keys a record must have (sorted, deduplicated).
pub fn index_keys(table: &TableDef, rec: &Map<String, Value>, pk: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(table.attributes.len());
    for a in &table.attributes {
        if !a.indexed || a.name == table.primary_key {
            continue;
        }
        if let Some(v) = rec.get(&a.name) {
            keys::index_entries(a.id, v, pk, &mut out);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Harper refuses these primary key values outright.
fn reserved_pk(v: &Value) -> bool {
    matches!(v, Value::String(s) if s == "null" || s == "undefined")
}

pub(crate) fn pk_error(pk_attr: &str, v: &Value) -> OpError {
    if keys::is_inexact_integer(v) {
        return OpError::bad_request(format!(
            "'{pk_attr}' value {v} is an integer beyond 2^53, which cannot be kept exactly (it would share a key with another number); send it as a string"
        ));
    }
    if reserved_pk(v) {
        OpError::bad_request(format!(
            "\"{}\" is not a valid hash attribute value",
            v.as_str().unwrap_or_default()
        ))
    } else {
        OpError::bad_request(format!(
            "'{pk_attr}' must be a string or a number (and at most {} bytes long)",
            keys::MAX_PK_BYTES
        ))
    }
}

/// Encodes a primary key value or explains why it is not one.
pub(crate) fn encode_pk_checked(pk_attr: &str, v: &Value) -> Result<Vec<u8>, OpError> {
    if reserved_pk(v) {
        return Err(pk_error(pk_attr, v));
    }
    keys::encode_pk(v).ok_or_else(|| pk_error(pk_attr, v))
}

/// Harper's checks of an attribute name in a written record, with its messages (a name over
/// 250 bytes aborts the whole transaction), then Skerry's name rules.
fn invalid_record_attribute(name: &str) -> Option<String> {
    if name.len() > MAX_ATTRIBUTE_NAME_BYTES {
        return Some(format!(
            "transaction aborted due to attribute name {name} being too long. Attribute names cannot be longer than {MAX_ATTRIBUTE_NAME_BYTES} bytes."
        ));
    }
    if name.trim().is_empty() {
        return Some(
            "transaction aborted due to record(s) with an attribute name that is null, undefined or empty string"
                .to_string(),
        );
    }
    invalid_name("Attribute", name)
}

/// Longest attribute name (Harper's `INSERT_MAX_CHARACTER_SIZE`).
const MAX_ATTRIBUTE_NAME_BYTES: usize = 250;

fn parse_map(json: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(json) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

impl<R> Core<R> {
    /// Stores a record (or a tombstone when `new` is None) at `version` from `origin`, keeping
    /// indexes, stats and derived state in step. `old` is what was stored before.
    fn store_entry(
        &mut self,
        table: &TableDef,
        pk: &[u8],
        old: Option<&StoredRecord>,
        new: Option<(&Map<String, Value>, Vec<u8>)>,
        version: u64,
        origin: u32,
    ) {
        let old_keys = old
            .and_then(|o| o.json.as_deref())
            .and_then(parse_map)
            .map(|m| index_keys(table, &m, pk))
            .unwrap_or_default();
        let new_keys = new
            .as_ref()
            .map(|(m, _)| index_keys(table, m, pk))
            .unwrap_or_default();
        // Both lists are sorted: one merge pass finds what to delete and what to add.
        let (mut i, mut j) = (0, 0);
        while i < old_keys.len() || j < new_keys.len() {
            match (old_keys.get(i), new_keys.get(j)) {
                (Some(o), Some(n)) if o == n => {
                    i += 1;
                    j += 1;
                }
                (Some(o), Some(n)) if o < n => {
                    self.writes.push(Write::IndexDel {
                        table: table.id,
                        key: o.clone(),
                    });
                    i += 1;
                }
                (Some(o), None) => {
                    self.writes.push(Write::IndexDel {
                        table: table.id,
                        key: o.clone(),
                    });
                    i += 1;
                }
                (_, Some(n)) => {
                    self.writes.push(Write::IndexPut {
                        table: table.id,
                        key: n.clone(),
                    });
                    j += 1;
                }
                (None, None) => break,
            }
        }
        let was_live = old.is_some_and(|o| !o.is_tombstone());
        let old_bytes = old
            .and_then(|o| o.json.as_ref())
            .map_or(0, |j| j.len() as u64);
        let new_bytes = new.as_ref().map_or(0, |(_, j)| j.len() as u64);
        // The table digest: the old live record's contribution out, the new one's in.
        let old_hash = old.and_then(|o| {
            o.json
                .as_deref()
                .map(|j| digest::record_hash(pk, o.version, self.origins.name(o.origin), j))
        });
        let new_hash = new
            .as_ref()
            .map(|(_, j)| digest::record_hash(pk, version, self.origins.name(origin), j));
        let stats = self.stats.entry(table.id).or_default();
        if let Some(d) = stats.digest.as_mut() {
            if let Some(h) = old_hash {
                *d = digest::remove(*d, h);
            }
            if let Some(h) = new_hash {
                *d = digest::add(*d, h);
            }
        }
        stats.bytes = stats.bytes.saturating_sub(old_bytes) + new_bytes;
        match (was_live, new.is_some()) {
            (false, true) => stats.count += 1,
            (true, false) => stats.count = stats.count.saturating_sub(1),
            _ => {}
        }
        stats.last_version = stats.last_version.max(version);
        self.dirty_stats.insert(table.id);

        if table.database == SYSTEM_DB {
            self.on_system_write(&table.name, pk, new.as_ref().map(|(m, _)| *m));
        }
        let record = StoredRecord {
            version,
            origin,
            json: new.map(|(_, json)| json),
        };
        self.overlay
            .insert((table.id, pk.to_vec()), self.writes.len());
        self.writes.push(Write::Record {
            table: table.id,
            pk: pk.to_vec(),
            record,
        });
    }

    /// Keeps derived state (users, roles) in step with committed system-table writes, whether
    /// they were made here or replicated.
    fn on_system_write(&mut self, table: &str, pk: &[u8], record: Option<&Map<String, Value>>) {
        let Some(key) = keys::decode_pk(pk) else {
            return;
        };
        let key = match key {
            Value::String(s) => s,
            other => other.to_string(),
        };
        match table {
            HDB_USER => {
                Arc::make_mut(&mut self.auth).apply_user(&key, record);
                self.auth_dirty = true;
            }
            HDB_ROLE => {
                Arc::make_mut(&mut self.auth).apply_role(&key, record);
                self.auth_dirty = true;
            }
            HDB_NODES => self.membership_dirty = true,
            _ => {}
        }
    }

    /// Why adding `new` more attributes to `db.table` is refused, if it is: more than
    /// `storage.maxNewAttributesPerRequest` in one request, or the table past
    /// `storage.maxAttributesPerTable`. Every attribute is indexed and lives in the catalog that
    /// is rewritten when it changes, so an unbounded number would let one request slow every
    /// later write.
    fn attribute_limit_error(
        &self,
        db: &str,
        table: &str,
        def: &TableDef,
        new: usize,
    ) -> Option<OpError> {
        if new > self.limits.max_new_attributes_per_request {
            return Some(OpError::bad_request(format!(
                "this write would add more than {} new attributes to '{db}.{table}' (storage.maxNewAttributesPerRequest)",
                self.limits.max_new_attributes_per_request
            )));
        }
        if def.attributes.len() + new > self.limits.max_attributes_per_table {
            return Some(OpError::bad_request(format!(
                "'{db}.{table}' would have more than {} attributes (storage.maxAttributesPerTable)",
                self.limits.max_attributes_per_table
            )));
        }
        None
    }

    /// Adds attributes of a dynamic table that `rec` introduces; returns their names.
    fn add_new_attributes(
        &mut self,
        db: &str,
        table: &str,
        rec: &Map<String, Value>,
    ) -> Vec<String> {
        let Some(def) = self.catalog.table(db, table) else {
            return Vec::new();
        };
        if def.schema_defined || rec.keys().all(|k| def.has_attribute(k)) {
            return Vec::new();
        }
        let mut added = Vec::new();
        let mut backfill = Vec::new();
        if let Some(def) = Arc::make_mut(&mut self.catalog).table_mut(db, table) {
            for k in rec.keys() {
                if def.add_attribute(k, true, None) {
                    added.push(k.clone());
                    // A dropped attribute coming back: older records still hold its values.
                    if def.dropped.iter().any(|d| d == k) {
                        def.dropped.retain(|d| d != k);
                        if let Some(a) = def.attribute(k) {
                            backfill.push((def.id, a.id, k.clone()));
                        }
                    }
                }
            }
        }
        self.backfill_indexes(backfill);
        self.mark_catalog_changed();
        added
    }

    fn table_or_404(&self, db: &str, table: &str) -> Result<TableDef, OpError> {
        let Some(d) = self.catalog.database(db) else {
            return Err(OpError::database_not_found(db));
        };
        d.tables
            .get(table)
            .cloned()
            .ok_or_else(|| OpError::table_not_found(db, table))
    }

    /// insert / update / upsert: one request = one transaction = one version.
    ///
    /// Records arrive as JSON text ([`RecordBatch`]) and are parsed one at a time. A first pass
    /// validates the whole request (names, keys, the attribute limits) before anything is
    /// written, so a bad record fails the request and leaves the store untouched; it keeps the
    /// parsed records only for small batches, so a large request never holds more than its text
    /// and one parsed record at a time.
    pub(super) fn write_records(
        &mut self,
        kind: WriteKind,
        db: &str,
        table: &str,
        mut records: RecordBatch,
        now_ms: u64,
        store: &dyn StoreView,
    ) -> StepResult {
        let catalog = self.catalog.clone();
        // Records handed over parsed are taken as they are (moved, never copied).
        let mut given = records.take_parsed().map(Vec::into_iter);
        // Harper answers a record write into a missing database or table with 400 (captured),
        // where reads and schema operations answer 404.
        let as_400 = |e: OpError| OpError::bad_request(e.message());
        let def = match catalog.database(db) {
            None => return Ok(Err(as_400(OpError::database_not_found(db)))),
            Some(d) => match d.tables.get(table) {
                None => return Ok(Err(as_400(OpError::table_not_found(db, table)))),
                Some(t) => t,
            },
        };
        let pk_attr = def.primary_key.clone();
        let schema_defined = def.schema_defined;
        let types = attr_type::table_types(def);
        let keep_parsed = given.is_some() || records.text_len() <= KEEP_PARSED_BYTES;
        let count = given.as_ref().map_or(records.len(), |g| g.len());
        let mut parsed: Vec<Map<String, Value>> = Vec::new();
        let mut keys: Vec<(Value, Vec<u8>)> = Vec::with_capacity(count);
        let mut new_names: HashSet<String> = HashSet::new();
        for i in 0..count {
            let next = match given.as_mut() {
                Some(g) => g
                    .next()
                    .ok_or_else(|| "fewer records than counted".to_string()),
                None => records.parse(i),
            };
            let mut rec = match next {
                Ok(r) => r,
                Err(e) => return Ok(Err(OpError::bad_request(format!("invalid record: {e}")))),
            };
            for k in rec.keys() {
                if let Some(msg) = invalid_record_attribute(k) {
                    return Ok(Err(OpError::bad_request(msg)));
                }
                if !schema_defined && !def.has_attribute(k) && !new_names.contains(k) {
                    new_names.insert(k.clone());
                    if let Some(e) = self.attribute_limit_error(db, table, def, new_names.len()) {
                        return Ok(Err(e));
                    }
                }
            }
            if let Err(msg) = attr_type::check_record(&types, &mut rec) {
                return Ok(Err(OpError::bad_request(msg)));
            }
            let pk_value = match rec.get(&pk_attr) {
                None | Some(Value::Null) => {
                    if kind == WriteKind::Update {
                        return Ok(Err(OpError::bad_request(
                            "a valid hash attribute must be provided with update record, check log for more info",
                        )));
                    }
                    let id = Value::String(crate::util::uuid_v4());
                    rec.insert(pk_attr.clone(), id.clone());
                    id
                }
                Some(v) => v.clone(),
            };
            let pk = match encode_pk_checked(&pk_attr, &pk_value) {
                Ok(pk) => pk,
                Err(e) => return Ok(Err(e)),
            };
            keys.push((pk_value, pk));
            if keep_parsed {
                parsed.push(rec);
            }
        }
        drop(catalog);

        let version = self.hlc.next(now_ms);
        let txn_ms = hlc::to_ms_f64(version);
        let mut written = Vec::new();
        let mut skipped = Vec::new();
        let mut new_attributes: Vec<String> = Vec::new();
        let mut ops = OpsWriter::default();
        let mut seen = HashSet::new();
        let mut parsed = parsed.into_iter();
        for (i, (pk_value, pk)) in keys.into_iter().enumerate() {
            let rec = match parsed.next() {
                Some(r) => r,
                None => {
                    let mut r = records.parse(i).unwrap_or_default();
                    // Checked in the first pass; converted again in this copy.
                    let _ = attr_type::check_record(&types, &mut r);
                    // A generated key was put in the first pass's copy: put it again.
                    r.entry(pk_attr.clone()).or_insert_with(|| pk_value.clone());
                    if r.get(&pk_attr).is_some_and(Value::is_null) {
                        r.insert(pk_attr.clone(), pk_value.clone());
                    }
                    r
                }
            };
            if !seen.insert(pk.clone()) {
                skipped.push(pk_value);
                continue;
            }
            // The table's definition as of now (earlier records may have added attributes);
            // an Arc handle, so nothing is copied per record.
            let catalog = self.catalog.clone();
            let Some(def) = catalog.table(db, table) else {
                break;
            };
            let existing = self.read(store, def.id, &pk)?;
            let live = existing
                .as_ref()
                .and_then(|e| e.json.as_deref())
                .and_then(parse_map);
            let created_before = live.as_ref().and_then(|m| m.get(CREATED_TIME).cloned());
            let mut merged = match (kind, live) {
                (WriteKind::Insert, Some(_)) | (WriteKind::Update, None) => {
                    skipped.push(pk_value);
                    continue;
                }
                (_, Some(mut current)) => {
                    // update/upsert are read-merge-put (Harper): a full record, not a patch.
                    for (k, v) in rec {
                        current.insert(k, v);
                    }
                    current
                }
                (_, None) => rec,
            };
            if def.has_attribute(UPDATED_TIME) {
                // The timestamps are the node's: a record's creation time is the one stored
                // (the request's own `__createdtime__` / `__updatedtime__` are ignored, as in
                // Harper, which answers 200 and keeps them unchanged).
                let created = created_before.unwrap_or_else(|| json!(txn_ms));
                merged.insert(CREATED_TIME.to_string(), created);
                merged.insert(UPDATED_TIME.to_string(), json!(txn_ms));
            }
            let catalog = if !def.schema_defined && merged.keys().any(|k| !def.has_attribute(k)) {
                // Let go of the handle first: adding attributes must not copy the catalog
                // because this function still holds the old one.
                drop(catalog);
                for a in self.add_new_attributes(db, table, &merged) {
                    if !new_attributes.contains(&a) {
                        new_attributes.push(a);
                    }
                }
                self.catalog.clone()
            } else {
                catalog
            };
            let Some(def) = catalog.table(db, table) else {
                break;
            };
            let json = serde_json::to_vec(&merged).unwrap_or_default();
            if def.replicate {
                ops.put(table, &pk_attr, &pk, &json);
            }
            self.store_entry(
                def,
                &pk,
                existing.as_ref(),
                Some((&merged, json)),
                version,
                self.self_origin,
            );
            written.push(pk_value);
        }
        let txn_kind = match kind {
            WriteKind::Insert => TxnKind::Insert,
            WriteKind::Update => TxnKind::Update,
            WriteKind::Upsert => TxnKind::Upsert,
        };
        self.commit_local_txn(db, version, ops, txn_kind);

        let total = written.len() + skipped.len();
        let (verb, hashes_key) = match kind {
            WriteKind::Insert => ("inserted", "inserted_hashes"),
            WriteKind::Update => ("updated", "update_hashes"),
            WriteKind::Upsert => ("upserted", "upserted_hashes"),
        };
        // Harper's keys in Harper's order; the two extras last (the HTTP layer drops them
        // unless the client asked for them).
        let mut out = Map::new();
        out.insert(
            "message".into(),
            json!(format!("{verb} {} of {total} records", written.len())),
        );
        out.insert(hashes_key.into(), Value::Array(written));
        if kind != WriteKind::Upsert {
            out.insert("skipped_hashes".into(), Value::Array(skipped));
        }
        if !schema_defined {
            out.insert("new_attributes".into(), json!(new_attributes));
        }
        out.insert("txn_time".into(), json!(txn_ms));
        Ok(Ok(Value::Object(out)))
    }

    /// Logs a local transaction (if it changed anything replicable) in its database's audit log.
    pub(super) fn commit_local_txn(
        &mut self,
        db: &str,
        version: u64,
        ops: OpsWriter,
        kind: TxnKind,
    ) {
        if ops.is_empty() {
            return;
        }
        let Some(db_id) = self.catalog.database(db).map(|d| d.id) else {
            return;
        };
        let entry = ops.finish(&self.actor, kind);
        self.log_txn(db, db_id, self.self_origin, version, entry);
    }

    /// A local delete of `pk`: a tombstone at `version` from this node, logged in `ops` when
    /// the table replicates.
    fn tombstone_local(
        &mut self,
        def: &TableDef,
        table: &str,
        pk: &[u8],
        version: u64,
        store: &dyn StoreView,
        ops: &mut OpsWriter,
    ) -> Result<(), StoreError> {
        let existing = self.read(store, def.id, pk)?;
        self.store_entry(def, pk, existing.as_ref(), None, version, self.self_origin);
        if def.replicate {
            ops.delete(table, &def.primary_key, pk);
        }
        Ok(())
    }

    pub(super) fn delete_records(
        &mut self,
        db: &str,
        table: &str,
        ids: &[Value],
        now_ms: u64,
        store: &dyn StoreView,
    ) -> StepResult {
        let def = match self.table_or_404(db, table) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let mut pks = Vec::with_capacity(ids.len());
        for id in ids {
            match encode_pk_checked(&def.primary_key, id) {
                Ok(pk) => pks.push((id.clone(), pk)),
                Err(e) => return Ok(Err(e)),
            }
        }
        let version = self.hlc.next(now_ms);
        let mut ops = OpsWriter::default();
        let mut deleted = Vec::new();
        let mut skipped = Vec::new();
        let mut seen = HashSet::new();
        for (id, pk) in pks {
            if !seen.insert(pk.clone()) {
                skipped.push(id);
                continue;
            }
            let live = self
                .read(store, def.id, &pk)?
                .is_some_and(|r| !r.is_tombstone());
            // A delete of a missing key still writes a versioned tombstone: another node may
            // hold an older copy of the key (or one still on its way here), and this delete
            // must win over it. But nothing was deleted here, and the answer says so: Harper
            // counts such ids as deleted, Skerry reports them in `skipped_hashes`.
            self.tombstone_local(&def, table, &pk, version, store, &mut ops)?;
            if live {
                deleted.push(id);
            } else {
                skipped.push(id);
            }
        }
        self.commit_local_txn(db, version, ops, TxnKind::Delete);
        let total = ids.len();
        let noun = if total == 1 { "record" } else { "records" };
        Ok(Ok(json!({
            "message": format!("{} of {total} {noun} successfully deleted", deleted.len()),
            "deleted_hashes": deleted,
            "skipped_hashes": skipped,
            "txn_time": hlc::to_ms_f64(version),
        })))
    }

    /// The expiry sweep's local eviction: each record still expired at `now_ms` gets a
    /// tombstone at the record's own version and origin, with no audit entry (so nothing
    /// replicates). A newer write, from here or a peer, has a higher version and wins over it;
    /// an older copy arriving later loses to it, as it would to the record itself.
    pub(super) fn evict(
        &mut self,
        db: &str,
        table: &str,
        pks: &[Vec<u8>],
        now_ms: u64,
        store: &dyn StoreView,
    ) -> StepResult {
        let def = match self.table_or_404(db, table) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let mut evicted = 0u64;
        for pk in pks {
            let Some(existing) = self.read(store, def.id, pk)? else {
                continue;
            };
            let still_expired = existing
                .json
                .as_deref()
                .and_then(parse_map)
                .is_some_and(|m| def.expired(&m, now_ms));
            if !still_expired {
                continue;
            }
            let (version, origin) = (existing.version, existing.origin);
            self.store_entry(&def, pk, Some(&existing), None, version, origin);
            evicted += 1;
        }
        Ok(Ok(json!({ "evicted": evicted })))
    }

    /// Reads a live system record by key.
    fn system_record(
        &self,
        store: &dyn StoreView,
        table: &str,
        key: &Value,
    ) -> Result<Option<Map<String, Value>>, StoreError> {
        let Some(def) = self.catalog.table(SYSTEM_DB, table) else {
            return Ok(None);
        };
        let Some(pk) = keys::encode_pk(key) else {
            return Ok(None);
        };
        Ok(self
            .read(store, def.id, &pk)?
            .and_then(|r| r.json)
            .and_then(|j| parse_map(&j)))
    }

    /// Writes one record of a system table as its own local transaction (stamped, indexed,
    /// audited if the table replicates). Returns the record as stored and the version.
    fn put_system(
        &mut self,
        table: &str,
        mut record: Map<String, Value>,
        now_ms: u64,
        store: &dyn StoreView,
    ) -> SystemWrite<(Map<String, Value>, u64)> {
        let def = match self.table_or_404(SYSTEM_DB, table) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let Some(key) = record.get(&def.primary_key).cloned() else {
            return Ok(Err(OpError::bad_request(format!(
                "'{}' is required",
                def.primary_key
            ))));
        };
        let pk = match encode_pk_checked(&def.primary_key, &key) {
            Ok(pk) => pk,
            Err(e) => return Ok(Err(e)),
        };
        let version = self.hlc.next(now_ms);
        let txn_ms = hlc::to_ms_f64(version);
        let existing = self.read(store, def.id, &pk)?;
        let created = existing
            .as_ref()
            .and_then(|e| e.json.as_deref())
            .and_then(parse_map)
            .and_then(|m| m.get(CREATED_TIME).cloned())
            .unwrap_or_else(|| json!(txn_ms));
        record.insert(UPDATED_TIME.into(), json!(txn_ms));
        record.insert(CREATED_TIME.into(), created);
        if table == HDB_NODES {
            record.remove(NODE_SECRET_FIELD);
        }
        self.add_new_attributes(SYSTEM_DB, table, &record);
        let def = self.catalog.table(SYSTEM_DB, table).cloned().unwrap_or(def);
        let json = serde_json::to_vec(&record).unwrap_or_default();
        let mut ops = OpsWriter::default();
        if def.replicate {
            ops.put(table, &def.primary_key, &pk, &json);
        }
        self.store_entry(
            &def,
            &pk,
            existing.as_ref(),
            Some((&record, json)),
            version,
            self.self_origin,
        );
        self.commit_local_txn(SYSTEM_DB, version, ops, TxnKind::None);
        Ok(Ok((record, version)))
    }

    fn delete_system(
        &mut self,
        table: &str,
        key: &Value,
        now_ms: u64,
        store: &dyn StoreView,
    ) -> SystemWrite<u64> {
        let def = match self.table_or_404(SYSTEM_DB, table) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let pk = match encode_pk_checked(&def.primary_key, key) {
            Ok(pk) => pk,
            Err(e) => return Ok(Err(e)),
        };
        let version = self.hlc.next(now_ms);
        let mut ops = OpsWriter::default();
        self.tombstone_local(&def, table, &pk, version, store, &mut ops)?;
        self.commit_local_txn(SYSTEM_DB, version, ops, TxnKind::None);
        Ok(Ok(version))
    }

    pub(super) fn system_put(
        &mut self,
        table: &str,
        record: Map<String, Value>,
        now_ms: u64,
        store: &dyn StoreView,
    ) -> StepResult {
        Ok(self
            .put_system(table, record, now_ms, store)?
            .map(|(rec, _)| Value::Object(rec)))
    }

    /// A membership change as one input (see [`WriteOp::Membership`]): each row patch reads
    /// the row as this group left it, so concurrent changes to one row both land.
    pub(super) fn membership(
        &mut self,
        changes: Vec<super::op::MemberChange>,
        now_ms: u64,
        store: &dyn StoreView,
    ) -> StepResult {
        use super::op::MemberChange;
        for change in changes {
            match change {
                MemberChange::PatchNode {
                    name,
                    fields,
                    if_new,
                    union,
                } => {
                    let current = self.system_record(store, HDB_NODES, &json!(name))?;
                    let mut row = current.clone().unwrap_or_default();
                    row.remove(CREATED_TIME);
                    row.remove(UPDATED_TIME);
                    if current.is_none() {
                        row.extend(if_new);
                    }
                    row.insert("name".into(), json!(name));
                    row.extend(fields);
                    for (k, add) in union {
                        let mut all = match row.remove(&k) {
                            Some(Value::Array(a)) => a,
                            _ => Vec::new(),
                        };
                        for v in add.as_array().into_iter().flatten() {
                            if !all.contains(v) {
                                all.push(v.clone());
                            }
                        }
                        row.insert(k, Value::Array(all));
                    }
                    let unchanged = current.is_some_and(|mut c| {
                        c.remove(CREATED_TIME);
                        c.remove(UPDATED_TIME);
                        c == row
                    });
                    if !unchanged {
                        if let Err(e) = self.put_system(HDB_NODES, row, now_ms, store)? {
                            return Ok(Err(e));
                        }
                    }
                }
                MemberChange::DeleteNode { name } => {
                    if self
                        .system_record(store, HDB_NODES, &json!(name))?
                        .is_some()
                    {
                        if let Err(e) =
                            self.delete_system(HDB_NODES, &json!(name), now_ms, store)?
                        {
                            return Ok(Err(e));
                        }
                    }
                }
                MemberChange::Local { key, value } => {
                    self.writes.push(crate::store::Write::Local { key, value });
                }
            }
        }
        Ok(Ok(json!({ "message": "ok" })))
    }

    pub(super) fn system_delete(
        &mut self,
        table: &str,
        key: &Value,
        now_ms: u64,
        store: &dyn StoreView,
    ) -> StepResult {
        Ok(self
            .delete_system(table, key, now_ms, store)?
            .map(|v| json!({ "txn_time": hlc::to_ms_f64(v) })))
    }

    // ----- users and roles ---------------------------------------------------------------

    pub(super) fn add_user(
        &mut self,
        username: &str,
        password_hash: &str,
        role: &str,
        active: bool,
        now_ms: u64,
        store: &dyn StoreView,
    ) -> StepResult {
        let Some(role_id) = self.auth.role_by_name(role).map(|r| r.id.clone()) else {
            return Ok(Err(OpError::not_found(format!("{role} role not found"))));
        };
        if self
            .system_record(store, HDB_USER, &json!(username))?
            .is_some()
        {
            return Ok(Err(OpError::conflict(format!(
                "User {username} already exists"
            ))));
        }
        let mut rec = Map::new();
        rec.insert("username".into(), json!(username));
        rec.insert("password".into(), json!(password_hash));
        rec.insert("hash_function".into(), json!("argon2id"));
        rec.insert("role".into(), json!(role_id));
        rec.insert("active".into(), json!(active));
        Ok(self
            .put_system(HDB_USER, rec, now_ms, store)?
            .map(|_| json!({ "message": format!("{username} successfully added") })))
    }

    pub(super) fn alter_user(
        &mut self,
        username: &str,
        password_hash: Option<String>,
        role: Option<String>,
        active: Option<bool>,
        now_ms: u64,
        store: &dyn StoreView,
    ) -> StepResult {
        let Some(mut rec) = self.system_record(store, HDB_USER, &json!(username))? else {
            return Ok(Err(OpError::not_found(format!(
                "User {username} does not exist"
            ))));
        };
        if let Some(role) = role {
            let Some(role_id) = self.auth.role_by_name(&role).map(|r| r.id.clone()) else {
                return Ok(Err(OpError::not_found(format!(
                    "Update failed.  Requested '{role}' role not found."
                ))));
            };
            rec.insert("role".into(), json!(role_id));
        }
        if let Some(h) = password_hash {
            rec.insert("password".into(), json!(h));
            rec.insert("hash_function".into(), json!("argon2id"));
        }
        if let Some(a) = active {
            rec.insert("active".into(), json!(a));
        }
        Ok(self
            .put_system(HDB_USER, rec, now_ms, store)?
            .map(|(_, v)| {
                // Harper 4.7's keys (captured); its `txn_time` is always 0, Skerry's is the
                // transaction's.
                json!({
                    "message": "updated 1 of 1 records",
                    "txn_time": hlc::to_ms_f64(v),
                    "update_hashes": [username],
                    "skipped_hashes": [],
                })
            }))
    }

    pub(super) fn drop_user(
        &mut self,
        username: &str,
        now_ms: u64,
        store: &dyn StoreView,
    ) -> StepResult {
        if self
            .system_record(store, HDB_USER, &json!(username))?
            .is_none()
        {
            return Ok(Err(OpError::not_found(format!(
                "User {username} does not exist"
            ))));
        }
        Ok(self
            .delete_system(HDB_USER, &json!(username), now_ms, store)?
            .map(|_| json!({ "message": format!("{username} successfully deleted") })))
    }

    pub(super) fn add_role(
        &mut self,
        role: &str,
        id: Option<String>,
        permission: Value,
        now_ms: u64,
        store: &dyn StoreView,
    ) -> StepResult {
        if let Some(e) = permission
            .as_object()
            .and_then(|p| permission_errors(p, &self.catalog))
        {
            return Ok(Err(e));
        }
        if self.auth.role_by_name(role).is_some() {
            return Ok(Err(OpError::conflict(format!(
                "A role with name '{role}' already exists"
            ))));
        }
        // Harper 4.7 uses the role name as the id when none is given.
        let id = id.unwrap_or_else(|| role.to_string());
        if self.system_record(store, HDB_ROLE, &json!(id))?.is_some() {
            return Ok(Err(OpError::conflict(format!(
                "A role with id '{id}' already exists"
            ))));
        }
        let mut rec = Map::new();
        rec.insert("role".into(), json!(role));
        rec.insert("permission".into(), permission);
        rec.insert("id".into(), json!(id));
        Ok(self
            .put_system(HDB_ROLE, rec, now_ms, store)?
            .map(|(rec, _)| Value::Object(rec)))
    }

    pub(super) fn alter_role(
        &mut self,
        id: &str,
        role: Option<String>,
        permission: Option<Value>,
        now_ms: u64,
        store: &dyn StoreView,
    ) -> StepResult {
        // Harper checks the permissions before it looks the role up.
        if let Some(e) = permission
            .as_ref()
            .and_then(Value::as_object)
            .and_then(|p| permission_errors(p, &self.catalog))
        {
            return Ok(Err(e));
        }
        let Some(stored) = self.system_record(store, HDB_ROLE, &json!(id))? else {
            return Ok(Err(OpError::bad_request("Invalid role id")));
        };
        if let Some(name) = &role {
            if self.auth.role_by_name(name).is_some_and(|r| r.id != id) {
                return Ok(Err(OpError::conflict(format!(
                    "A role with name '{name}' already exists"
                ))));
            }
        }
        // Harper's answer: `id`, `role`, `permission`, then the timestamps (which `put_system`
        // appends: the stored ones are left out here so they come last).
        let mut rec = Map::new();
        rec.insert("id".into(), json!(id));
        if let Some(r) = role
            .map(Value::String)
            .or_else(|| stored.get("role").cloned())
        {
            rec.insert("role".into(), r);
        }
        if let Some(p) = permission.or_else(|| stored.get("permission").cloned()) {
            rec.insert("permission".into(), p);
        }
        for (k, v) in stored {
            if !rec.contains_key(&k) && k != CREATED_TIME && k != UPDATED_TIME {
                rec.insert(k, v);
            }
        }
        Ok(self
            .put_system(HDB_ROLE, rec, now_ms, store)?
            .map(|(rec, _)| Value::Object(rec)))
    }

    pub(super) fn drop_role(&mut self, id: &str, now_ms: u64, store: &dyn StoreView) -> StepResult {
        let Some(rec) = self.system_record(store, HDB_ROLE, &json!(id))? else {
            return Ok(Err(OpError::not_found("Role not found")));
        };
        let name = role_from_record(&rec)
            .map(|r| r.name)
            .unwrap_or_else(|| id.to_string());
        if id == SUPER_USER_ROLE {
            return Ok(Err(OpError::bad_request("Cannot drop the super_user role")));
        }
        if self.auth.users.values().any(|u| u.role_id == id) {
            return Ok(Err(OpError::bad_request(format!(
                "Cannot drop role {name} as it has user(s) tied to this role"
            ))));
        }
        Ok(self
            .delete_system(HDB_ROLE, &json!(id), now_ms, store)?
            .map(|_| json!({ "message": format!("{name} successfully deleted") })))
    }

    // ----- replication -------------------------------------------------------------------

    /// Applies a transaction received from a peer: each write by LWW against what is stored,
    /// with the origin's version and timestamps; the whole transaction lands in this group's
    /// batch together with its audit entry and the origin's cursor, so a crash never keeps one
    /// without the other.
    pub(super) fn apply_remote(
        &mut self,
        txn: Txn,
        store: &dyn StoreView,
    ) -> Result<(), StoreError> {
        if txn.origin == self.node_name {
            // Our own write echoed back (relay, full mesh race): an identity tie, nothing to do.
            return Ok(());
        }
        if self.catalog.database(&txn.db).is_none()
            && txn.version <= self.catalog.dropped_at(&txn.db, "")
        {
            // Made before a replicated drop of its database: it must not bring it back.
            return Ok(());
        }
        let origin = self.origin_id(&txn.origin);
        if self.catalog.database(&txn.db).is_none() {
            Arc::make_mut(&mut self.catalog).ensure_database(&txn.db);
            self.mark_catalog_changed();
        }
        let db_id = self.catalog.database(&txn.db).map(|d| d.id).unwrap_or(0);
        let applied = self
            .cursors
            .get(&db_id)
            .and_then(|m| m.get(&origin))
            .copied()
            .unwrap_or(0);
        if txn.version <= applied {
            // Streams of one origin are contiguous and ordered: this one is already here.
            return Ok(());
        }
        self.hlc.observe(txn.version);
        let mut txn = txn;
        if txn.db == SYSTEM_DB {
            // Users, roles and membership are the keys to the cluster: each write is checked
            // against who may make it (see `remote_system_op_allowed`). A refused op is dropped
            // loudly, never applied and never relayed; the rest of the transaction applies, so
            // the origin's stream keeps moving.
            let ops = std::mem::take(&mut txn.ops);
            for op in ops {
                if self.remote_system_op_allowed(&txn, &op) {
                    txn.ops.push(op);
                } else {
                    log::warn!(
                        "refused a write to system.{} from {} (by {:?}): not allowed for that origin and actor",
                        op.table().unwrap_or("?"),
                        txn.origin,
                        txn.actor
                    );
                }
            }
        }
        for op in &txn.ops {
            self.apply_remote_op(&txn, origin, op, store)?;
        }
        let ops = super::txn::encode_ops(&txn.actor, txn.kind, &txn.ops);
        self.log_txn(&txn.db, db_id, origin, txn.version, ops);
        Ok(())
    }

    /// Whether a peer's transaction may make this write to `system`: a node may write its own
    /// `hdb_nodes` row; any other membership row, user or role needs a super_user (by this
    /// node's view of the users) as the transaction's actor, or for a membership row the node
    /// it describes registering itself through the origin (`add_node_back`). Database creations
    /// and drops in the system log are not restricted here (every member may create databases).
    fn remote_system_op_allowed(&self, txn: &Txn, op: &TxnOp) -> bool {
        let by_super_user = txn
            .actor
            .user_name()
            .and_then(|u| self.auth.principal(u))
            .is_some_and(|p| {
                p.is_super_user() && self.auth.users.get(&p.username).is_some_and(|u| u.active)
            });
        match op {
            TxnOp::CreateDatabase { name } | TxnOp::DropDatabase { name } => name != SYSTEM_DB,
            TxnOp::Put { table, pk, .. } | TxnOp::Delete { table, pk, .. } => {
                match table.as_str() {
                    HDB_NODES => {
                        let row = keys::decode_pk(pk);
                        let row = row.as_ref().and_then(Value::as_str);
                        by_super_user
                            || row == Some(txn.origin.as_str())
                            || matches!(&txn.actor, super::txn::Actor::Node(n) if Some(n.as_str()) == row)
                    }
                    HDB_USER | HDB_ROLE => by_super_user,
                    _ => false,
                }
            }
            _ => false,
        }
    }

    fn apply_remote_op(
        &mut self,
        txn: &Txn,
        origin: u32,
        op: &TxnOp,
        store: &dyn StoreView,
    ) -> Result<(), StoreError> {
        let db = txn.db.as_str();
        // A write or schema change of a table made before a replicated drop of it (or of its
        // database) belongs to the dropped table: it neither brings the table back nor lands
        // in a table created again since (every write to that one is newer than the drop).
        // (A drop itself is judged by the creation it would undo, below.)
        if let Some(table) = op.table() {
            if db != SYSTEM_DB
                && !matches!(op, TxnOp::DropTable { .. })
                && txn.version <= self.catalog.dropped_at(db, table)
            {
                return Ok(());
            }
        }
        match op {
            TxnOp::Put {
                table,
                pk_attr,
                pk,
                record,
            } => {
                let Some(mut map) = parse_map(record) else {
                    // Undecodable is permanent: skip it loudly, never wedge the stream on it.
                    log::warn!(
                        "skipping an undecodable record from {} in {db}.{table}",
                        txn.origin
                    );
                    return Ok(());
                };
                // Credentials never live in a replicated row (older peers put retained ones
                // there): drop them on arrival.
                let mut record = std::borrow::Cow::Borrowed(record);
                if db == SYSTEM_DB && table == HDB_NODES && map.remove(NODE_SECRET_FIELD).is_some()
                {
                    record = std::borrow::Cow::Owned(serde_json::to_vec(&map).unwrap_or_default());
                }
                self.ensure_remote_table(db, table, pk_attr, txn.version);
                self.add_new_attributes(db, table, &map);
                self.apply_remote_write(
                    txn,
                    origin,
                    db,
                    table,
                    pk,
                    Some((&map, record.into_owned())),
                    store,
                )
            }
            TxnOp::Delete { table, pk_attr, pk } => {
                self.ensure_remote_table(db, table, pk_attr, txn.version);
                self.apply_remote_write(txn, origin, db, table, pk, None, store)
            }
            schema => {
                self.apply_remote_schema(db, schema, txn.version);
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_remote_write(
        &mut self,
        txn: &Txn,
        origin: u32,
        db: &str,
        table: &str,
        pk: &[u8],
        new: Option<(&Map<String, Value>, Vec<u8>)>,
        store: &dyn StoreView,
    ) -> Result<(), StoreError> {
        // A handle on the current catalog (an Arc clone) lends the table definition without
        // copying it for every replicated write; nothing below changes the catalog.
        let catalog = self.catalog.clone();
        let Some(def) = catalog.table(db, table) else {
            return Ok(());
        };
        let existing = self.read(store, def.id, pk)?;
        let decision = {
            let stored = existing
                .as_ref()
                .map(|e| (e.version, self.origins.name(e.origin)));
            lww::decide((txn.version, &txn.origin), stored)
        };
        if decision == Decision::Apply {
            self.store_entry(def, pk, existing.as_ref(), new, txn.version, origin);
        }
        Ok(())
    }

    /// Merges the rows of a full copy: each by LWW with its own version and origin. A copy never
    /// replaces a table and never deletes what only this node has (the Harper #2193 failure):
    /// rows absent from the copy are simply not touched.
    pub(super) fn apply_copy_rows(
        &mut self,
        db: &str,
        table: &super::CopyTable,
        mut rows: Vec<super::CopyRow>,
        store: &dyn StoreView,
    ) -> Result<(), StoreError> {
        // Rows of a table dropped since (the sender missed the drop): as for streamed writes,
        // they neither bring the table back nor land in a table created again since.
        // The table itself is created even then (its creation version is unknown here): if
        // the sender missed the drop, the drop reaches this node afterwards through the
        // stream, since the copy's vector lies below it, and removes the table again.
        let dropped = self.catalog.dropped_at(db, &table.name);
        if dropped > 0 {
            rows.retain(|r| r.version > dropped);
        }
        if self.catalog.database(db).is_none() {
            Arc::make_mut(&mut self.catalog).ensure_database(db);
            self.mark_catalog_changed();
        }
        if self.catalog.table(db, &table.name).is_none() {
            Arc::make_mut(&mut self.catalog).create_table(
                db,
                &table.name,
                &table.pk_attr,
                &table.attributes,
                table.schema_defined,
            );
            if let Some(t) = Arc::make_mut(&mut self.catalog).table_mut(db, &table.name) {
                t.expiration = table.expiration;
            }
            self.mark_catalog_changed();
        } else {
            self.merge_attributes(db, &table.name, &table.attributes);
        }
        for row in rows {
            let map = match &row.json {
                Some(j) => match parse_map(j) {
                    Some(m) => Some(m),
                    None => {
                        log::warn!(
                            "skipping an undecodable copied record in {db}.{}",
                            table.name
                        );
                        continue;
                    }
                },
                None => None,
            };
            if let Some(m) = &map {
                self.add_new_attributes(db, &table.name, m);
            }
            // Borrowed through an Arc clone of the catalog: no copy of the definition per row.
            let catalog = self.catalog.clone();
            let Some(def) = catalog.table(db, &table.name) else {
                continue;
            };
            let existing = self.read(store, def.id, &row.pk)?;
            let decision = {
                let stored = existing
                    .as_ref()
                    .map(|e| (e.version, self.origins.name(e.origin)));
                lww::decide((row.version, &row.origin), stored)
            };
            if decision == Decision::Apply {
                let origin = self.origin_id(&row.origin);
                self.hlc.observe(row.version);
                let new = match (map.as_ref(), row.json) {
                    (Some(m), Some(j)) => Some((m, j)),
                    _ => None,
                };
                self.store_entry(def, &row.pk, existing.as_ref(), new, row.version, origin);
            }
        }
        Ok(())
    }

    /// Adds the attributes of a peer's view of a table that this node lacks (a full copy's
    /// table schema, a replicated `CreateTable` of a table this node already has). Only ever
    /// adds: a peer's partial view never drops a local attribute. An attribute this node
    /// dropped itself is not brought back by a schema (its drop replicates too); records that
    /// carry it still do, as for local writes.
    pub(super) fn merge_attributes(
        &mut self,
        db: &str,
        table: &str,
        attributes: &[(String, Option<String>)],
    ) {
        let Some(def) = self.catalog.table(db, table) else {
            return;
        };
        if attributes
            .iter()
            .all(|(a, _)| def.has_attribute(a) || def.dropped.contains(a))
        {
            return;
        }
        let has_records = self.stats.get(&def.id).is_some_and(|s| s.count > 0);
        let mut backfill = Vec::new();
        if let Some(def) = Arc::make_mut(&mut self.catalog).table_mut(db, table) {
            for (name, ty) in attributes {
                if !def.dropped.contains(name) && def.add_attribute(name, true, ty.clone()) {
                    // Stored records may already hold this property: index them.
                    if let (true, Some(a)) = (has_records, def.attribute(name)) {
                        backfill.push((def.id, a.id, name.clone()));
                    }
                }
            }
        }
        self.backfill_indexes(backfill);
        self.mark_catalog_changed();
    }

    /// Queues the index back-fills of attributes that stored records may already hold:
    /// (table, attribute id, attribute name).
    fn backfill_indexes(&mut self, backfill: Vec<(u32, u32, String)>) {
        for (table, attribute, name) in backfill {
            self.writes.push(Write::BackfillIndex {
                table,
                attribute,
                name,
            });
        }
    }

    fn ensure_remote_table(&mut self, db: &str, table: &str, pk_attr: &str, version: u64) {
        if self.catalog.table(db, table).is_some() {
            return;
        }
        let cat = Arc::make_mut(&mut self.catalog);
        cat.create_table(db, table, pk_attr, &[], false);
        if let Some(t) = cat.table_mut(db, table) {
            t.created = version;
        }
        self.mark_catalog_changed();
    }

    /// Schema changes from a peer, applied idempotently (never an error: the peer already
    /// committed them).
    fn apply_remote_schema(&mut self, db: &str, op: &TxnOp, version: u64) {
        if let TxnOp::CreateTable {
            table, attributes, ..
        } = op
        {
            // A table both nodes created (or this node got first from another peer): the
            // peer's attributes are added, none of ours is lost.
            self.merge_attributes(db, table, attributes);
        }
        let cat = Arc::make_mut(&mut self.catalog);
        let mut drop_storage = Vec::new();
        match op {
            TxnOp::CreateDatabase { name } => {
                if version > cat.dropped_at(name, "") {
                    cat.ensure_database(name);
                }
            }
            TxnOp::CreateTable {
                table,
                pk_attr,
                attributes,
                schema_defined,
                expiration,
            } => {
                if cat.table(db, table).is_none() {
                    cat.create_table(db, table, pk_attr, attributes, *schema_defined);
                    if let Some(t) = cat.table_mut(db, table) {
                        t.expiration = *expiration;
                        t.created = version;
                    }
                }
            }
            TxnOp::CreateAttribute { table, attribute } => {
                if let Some(t) = cat.table_mut(db, table) {
                    t.add_attribute(attribute, true, None);
                }
            }
            TxnOp::DropAttribute { table, attribute } => {
                if let Some(t) = cat.table_mut(db, table) {
                    if t.primary_key != *attribute {
                        if let Some(a) = t.remove_attribute(attribute) {
                            self.writes.push(Write::DropIndexAttribute {
                                table: t.id,
                                attribute: a.id,
                            });
                        }
                    }
                }
            }
            TxnOp::DropTable { table } => {
                if db != SYSTEM_DB {
                    cat.record_drop(db, table, version);
                    // A table created after this drop (a later create_table of the same
                    // name) is another table: the late drop leaves it alone.
                    let newer = cat.table(db, table).is_some_and(|t| t.created > version);
                    if !newer {
                        if let Some(t) = cat.drop_table(db, table) {
                            drop_storage.push(t.id);
                        }
                    }
                }
            }
            TxnOp::DropDatabase { name } => {
                if name != SYSTEM_DB {
                    cat.record_drop(name, "", version);
                    if let Some(d) = cat.drop_database(name) {
                        drop_storage.extend(d.tables.values().map(|t| t.id));
                        self.writes.push(Write::DropDatabaseLog { db: d.id });
                        self.cursors.remove(&d.id);
                    }
                }
            }
            TxnOp::Put { .. } | TxnOp::Delete { .. } => {}
        }
        for t in drop_storage {
            self.stats.remove(&t);
            self.writes.push(Write::DropTableStorage { table: t });
        }
        self.mark_catalog_changed();
    }
}
