//! Read operations, served on the HTTP worker threads straight from the store and the published
//! catalog and users (reads never queue behind the single writer).

use super::parse::{AuditSearch, Comparator, Condition, Logic, Operation, Search};

use super::query::{self, Page};
use crate::core::auth::{AuthState, Principal, TablePerm};
use crate::core::catalog::{Catalog, TableDef, SYSTEM_DB};
use crate::core::error::{OpError, OpResult};
use crate::core::hlc;
use crate::core::op::WriteOp;
use crate::core::txn::{self, TxnOp};
use crate::store::keys;
use crate::store::record::StoredRecord;
use crate::store::Store;
use serde_json::{json, Map, Value};

/// Harper's table description object, showing `p` only the attributes its role may use (read,
/// insert or update: Harper's `describe` permission). A role whose table permissions list no
/// attributes sees them all (Harper 4.7 shows it none; see README, Differences from Harper).
pub fn describe_table_value(store: &Store, t: &TableDef, db_size: u64, p: &Principal) -> Value {
    let stats = store.table_stats(t.id).unwrap_or_default();
    let (data, index) = store.table_disk_size(t.id).unwrap_or((0, 0));
    let rules = p
        .role
        .as_ref()
        .and_then(|r| r.attribute_rules(&t.database, &t.name));
    let attributes: Vec<Value> = t
        .attributes
        .iter()
        .filter(|a| {
            rules
                .as_ref()
                .is_none_or(|r| r.describes(&a.name, &t.primary_key))
        })
        .map(|a| {
            if a.name == t.primary_key {
                match &a.r#type {
                    Some(ty) => json!({"attribute": a.name, "type": ty, "is_primary_key": true}),
                    None => json!({"attribute": a.name, "is_primary_key": true}),
                }
            } else {
                let mut o = json!({"attribute": a.name, "indexed": a.indexed});
                if let Some(ty) = &a.r#type {
                    o["type"] = json!(ty);
                }
                o
            }
        })
        .collect();
    let mut o = json!({
        "schema": t.database,
        "name": t.name,
        "hash_attribute": t.primary_key,
        "audit": true,
        "schema_defined": t.schema_defined,
        "attributes": attributes,
        "db_size": db_size,
        "sources": [],
        "record_count": stats.count,
        // What fjall has written out, or (data still in memory and the journal) the records'
        // own bytes, whichever is more.
        "table_size": (data + index).max(stats.bytes),
        "db_audit_size": store.audit_disk_size(),
    });
    // Skerry's own: the order-independent digest of the live records (equal on nodes that
    // hold the same data; README, Differences from Harper).
    if let Some(d) = stats.digest {
        o["digest"] = json!(crate::store::digest::to_hex(d));
    }
    if stats.last_version > 0 {
        o["last_updated_record"] = json!(hlc::to_ms_f64(stats.last_version));
    }
    if !t.replicate {
        o["replicate"] = json!(false);
    }
    if let Some(secs) = t.expiration {
        o["expiration"] = json!(secs);
    }
    o
}

fn db_size(store: &Store, catalog: &Catalog, db: &str) -> u64 {
    catalog
        .database(db)
        .map(|d| {
            d.tables
                .values()
                .map(|t| {
                    let (a, b) = store.table_disk_size(t.id).unwrap_or((0, 0));
                    (a + b).max(store.table_stats(t.id).unwrap_or_default().bytes)
                })
                .sum()
        })
        .unwrap_or(0)
}

fn describe_database_value(store: &Store, catalog: &Catalog, db: &str, p: &Principal) -> Value {
    let size = db_size(store, catalog, db);
    let mut out = Map::new();
    if let Some(d) = catalog.database(db) {
        // In creation order (table ids grow), as Harper lists them.
        let mut tables: Vec<(&String, &TableDef)> = d.tables.iter().collect();
        tables.sort_by_key(|(_, t)| t.id);
        for (name, t) in tables {
            if p.role.as_ref().is_some_and(|r| r.can_see(db, name)) {
                out.insert(name.clone(), describe_table_value(store, t, size, p));
            }
        }
    }
    Value::Object(out)
}

fn table<'a>(catalog: &'a Catalog, db: &str, table: &str) -> Result<&'a TableDef, OpError> {
    if catalog.database(db).is_none() {
        return Err(OpError::database_not_found(db));
    }
    catalog
        .table(db, table)
        .ok_or_else(|| OpError::table_not_found(db, table))
}

/// The rows of a search, projected, as a lazy stream (see `query::search`).
pub type Rows = Box<dyn Iterator<Item = Result<Value, OpError>> + Send>;

fn search_rows(
    store: &Store,
    t: &TableDef,
    search: &Search,
    op: Logic,
    conds: &[Condition],
) -> Result<Rows, OpError> {
    let page = Page {
        limit: search.limit,
        offset: search.offset,
        sort: search.sort.as_ref(),
        reverse: search.reverse,
    };
    let recs = query::search(store, t, op, conds, &page)?;
    let get = search.get_attributes.clone();
    let table = t.clone();
    Ok(Box::new(recs.map(move |r| {
        r.map(|r| query::project(r, get.as_deref(), &table))
    })))
}

/// `search_by_value`'s `value` as a condition: `*` wildcards at either end mean starts/ends
/// with or contains; `*` alone matches every record.
fn value_condition(attribute: &str, value: &Value) -> Option<Condition> {
    let leaf = |comparator, v: &str| Condition::Leaf {
        attribute: attribute.to_string(),
        comparator,
        value: Value::String(v.to_string()),
    };
    let Value::String(s) = value else {
        return Some(Condition::Leaf {
            attribute: attribute.to_string(),
            comparator: Comparator::Equals,
            value: value.clone(),
        });
    };
    if s == "*" || s == "**" {
        return None;
    }
    let (starts, ends) = (s.starts_with('*'), s.ends_with('*'));
    Some(match (starts, ends) {
        (true, true) => leaf(Comparator::Contains, &s[1..s.len() - 1]),
        (false, true) => leaf(Comparator::StartsWith, &s[..s.len() - 1]),
        (true, false) => leaf(Comparator::EndsWith, &s[1..]),
        (false, false) => leaf(Comparator::Equals, s),
    })
}

/// One committed transaction's writes to a table, as `read_audit_log` reports them.
struct AuditItem {
    version: u64,
    user: Option<String>,
    kind: txn::TxnKind,
    puts: Vec<(Vec<u8>, Value)>,
    deletes: Vec<Vec<u8>>,
}

fn audit_entry(
    operation: &str,
    user: Option<&str>,
    ms: f64,
    ids: Vec<Value>,
    recs: Vec<Value>,
) -> Value {
    let mut o = Map::new();
    o.insert("operation".into(), json!(operation));
    if let Some(u) = user {
        o.insert("user_name".into(), json!(u));
    }
    o.insert("timestamp".into(), json!(ms));
    o.insert("hash_values".into(), Value::Array(ids));
    o.insert("records".into(), Value::Array(recs));
    Value::Object(o)
}

/// Harper's entry of one record in a `hash_value` search: insert and update both read
/// `upsert`, and the keys come in another order.
fn audit_record_entry(
    operation: &str,
    user: Option<&str>,
    ms: f64,
    id: Value,
    rec: Value,
) -> Value {
    let mut o = Map::new();
    o.insert("operation".into(), json!(operation));
    o.insert("timestamp".into(), json!(ms));
    if let Some(u) = user {
        o.insert("user_name".into(), json!(u));
    }
    o.insert("hash_values".into(), json!([id]));
    o.insert("records".into(), json!([rec]));
    Value::Object(o)
}

impl AuditItem {
    /// The entry (or, for a transaction that both wrote and deleted, entries) in Harper's
    /// default shape: `operation` is what the request was (insert, update, upsert, delete).
    fn entries(&self) -> Vec<Value> {
        let ms = hlc::to_ms_f64(self.version);
        let user = self.user.as_deref();
        let id = |pk: &Vec<u8>| keys::decode_pk(pk).unwrap_or(Value::Null);
        let mut out = Vec::new();
        if !self.puts.is_empty() {
            let op = match self.kind.name() {
                Some(n) if n != "delete" => n,
                _ => "upsert",
            };
            out.push(audit_entry(
                op,
                user,
                ms,
                self.puts.iter().map(|(pk, _)| id(pk)).collect(),
                self.puts.iter().map(|(_, r)| r.clone()).collect(),
            ));
        }
        if !self.deletes.is_empty() {
            out.push(audit_entry(
                "delete",
                user,
                ms,
                self.deletes.iter().map(id).collect(),
                self.deletes.iter().map(|_| Value::Null).collect(),
            ));
        }
        out
    }
}

/// The audit entries of one table, oldest first, in Harper's shapes: an array of
/// `{operation, user_name, timestamp, hash_values, records}` (all, or by `timestamp`), an
/// object of such arrays by user (`username`), or an object of per-record entries by primary
/// key (`hash_value`). `user_name` is absent for changes no user made (node-made writes).
fn read_audit_log(
    store: &Store,
    catalog: &Catalog,
    t: &TableDef,
    search: &AuditSearch,
) -> OpResult {
    let err = |e: crate::store::StoreError| OpError::internal(e.to_string());
    let db_id = catalog.database(&t.database).map(|d| d.id).unwrap_or(0);
    let wanted: Option<Vec<Vec<u8>>> = match search {
        AuditSearch::HashValue(v) => Some(v.iter().filter_map(keys::encode_pk).collect()),
        _ => None,
    };
    let (lo, hi) = match search {
        AuditSearch::Timestamp(lo, hi) => (*lo, *hi),
        _ => (f64::MIN, f64::MAX),
    };
    let mut items = Vec::new();
    for item in store.audit_of_db(db_id) {
        let (_, version, ops) = item.map_err(err)?;
        let ms = hlc::to_ms_f64(version);
        if ms < lo || ms > hi {
            continue;
        }
        let Ok(entry) = txn::decode_entry(&ops) else {
            continue;
        };
        let user = entry.actor.user_name().map(str::to_string);
        if let AuditSearch::Username(users) = search {
            if !user.as_ref().is_some_and(|u| users.contains(u)) {
                continue;
            }
        }
        let mut it = AuditItem {
            version,
            user,
            kind: entry.kind,
            puts: Vec::new(),
            deletes: Vec::new(),
        };
        for op in entry.ops {
            let (tname, pk, record) = match op {
                TxnOp::Put {
                    table, pk, record, ..
                } => (table, pk, Some(record)),
                TxnOp::Delete { table, pk, .. } => (table, pk, None),
                _ => continue,
            };
            if tname != t.name || wanted.as_ref().is_some_and(|w| !w.contains(&pk)) {
                continue;
            }
            match record {
                Some(r) => {
                    let rec = serde_json::from_slice::<Value>(&r).unwrap_or(Value::Null);
                    it.puts.push((pk, rec));
                }
                None => it.deletes.push(pk),
            }
        }
        if !it.puts.is_empty() || !it.deletes.is_empty() {
            items.push(it);
        }
    }
    // Entries of several origins interleave by version.
    items.sort_by_key(|i| i.version);
    match search {
        AuditSearch::All | AuditSearch::Timestamp(..) => Ok(Value::Array(
            items.iter().flat_map(AuditItem::entries).collect(),
        )),
        AuditSearch::Username(users) => {
            let mut out = Map::new();
            for u in users {
                let entries: Vec<Value> = items
                    .iter()
                    .filter(|i| i.user.as_deref() == Some(u.as_str()))
                    .flat_map(AuditItem::entries)
                    .collect();
                out.insert(u.clone(), Value::Array(entries));
            }
            Ok(Value::Object(out))
        }
        AuditSearch::HashValue(values) => {
            let mut out = Map::new();
            for v in values {
                let key = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let Some(pk) = keys::encode_pk(v) else {
                    out.insert(key, json!([]));
                    continue;
                };
                let mut entries = Vec::new();
                for i in &items {
                    let ms = hlc::to_ms_f64(i.version);
                    let user = i.user.as_deref();
                    for (p, rec) in &i.puts {
                        if *p == pk {
                            entries.push(audit_record_entry(
                                "upsert",
                                user,
                                ms,
                                v.clone(),
                                rec.clone(),
                            ));
                        }
                    }
                    if i.deletes.contains(&pk) {
                        entries.push(audit_record_entry(
                            "delete",
                            user,
                            ms,
                            v.clone(),
                            Value::Null,
                        ));
                    }
                }
                out.insert(key, Value::Array(entries));
            }
            Ok(Value::Object(out))
        }
    }
}

/// Applies `p`'s attribute permissions on `t` to a search: every attribute it names (to return,
/// to match, to sort by) must be readable, or the answer is Harper's 403 saying the attribute
/// does not exist; `*` (or no list) means the readable attributes. Returns the search to run.
fn restrict_search(
    p: &Principal,
    t: &TableDef,
    search: &Search,
    matched: &[&str],
) -> Result<Search, OpError> {
    let Some(rules) = p
        .role
        .as_ref()
        .and_then(|r| r.attribute_rules(&t.database, &t.name))
    else {
        return Ok(search.clone());
    };
    let mut named: Vec<&str> = matched.to_vec();
    if let Some(list) = &search.get_attributes {
        named.extend(list.iter().map(String::as_str).filter(|a| *a != "*"));
    }
    let mut sort = search.sort.as_ref();
    while let Some(s) = sort {
        named.push(&s.attribute);
        sort = s.next.as_deref();
    }
    check_attributes(&rules, t, named, TablePerm::Read)?;
    let mut out = search.clone();
    let star = search
        .get_attributes
        .as_ref()
        .is_none_or(|l| l.iter().any(|a| a == "*"));
    if star {
        let readable = rules.readable(&t.primary_key);
        if readable.is_empty() {
            return Err(OpError::internal(
                "'get_attributes' must contain at least 1 item",
            ));
        }
        out.get_attributes = Some(readable);
    }
    Ok(out)
}

/// Attribute permissions on writes: every attribute a record sets (new ones included) must be
/// writable for the role, for insert (insert), update (update) or upsert (both); otherwise
/// Harper's 403 names each as not existing, and nothing is written.
pub fn check_written_attributes(
    p: &Principal,
    catalog: &crate::core::catalog::Catalog,
    w: &WriteOp,
) -> Result<(), OpError> {
    use crate::core::auth::TablePerm;
    use crate::core::op::WriteKind;
    let WriteOp::Records {
        kind,
        database,
        table,
        records,
    } = w
    else {
        return Ok(());
    };
    let (Some(t), Some(rules)) = (
        catalog.table(database, table),
        p.role
            .as_ref()
            .and_then(|r| r.attribute_rules(database, table)),
    ) else {
        return Ok(());
    };
    let perms: &[TablePerm] = match kind {
        WriteKind::Insert => &[TablePerm::Insert],
        WriteKind::Update => &[TablePerm::Update],
        WriteKind::Upsert => &[TablePerm::Insert, TablePerm::Update],
    };
    for i in 0..records.len() {
        let rec = records.parse(i).map_err(OpError::bad_request)?;
        for perm in perms {
            check_attributes(&rules, t, rec.keys().map(String::as_str), *perm)?;
        }
    }
    Ok(())
}

/// Harper's 403 for attributes a role may not use: each one reported as not existing.
pub fn check_attributes<'a>(
    rules: &crate::core::auth::AttrRules,
    t: &TableDef,
    names: impl IntoIterator<Item = &'a str>,
    perm: TablePerm,
) -> Result<(), OpError> {
    let mut denied: Vec<Value> = Vec::new();
    for n in names {
        if !rules.allows(n, &t.primary_key, perm) {
            let item = json!(format!(
                "Attribute '{n}' does not exist on '{}.{}'",
                t.database, t.name
            ));
            if !denied.contains(&item) {
                denied.push(item);
            }
        }
    }
    if denied.is_empty() {
        Ok(())
    } else {
        Err(OpError::forbidden(vec![], denied))
    }
}

fn condition_attributes<'a>(conds: &'a [Condition], out: &mut Vec<&'a str>) {
    for c in conds {
        match c {
            Condition::Leaf { attribute, .. } => out.push(attribute),
            Condition::Group { conditions, .. } => condition_attributes(conditions, out),
        }
    }
}

/// Runs a search (`search_by_id`, `search_by_value`, `search_by_conditions`) for `p`.
pub fn rows(
    op: &Operation,
    p: &Principal,
    store: &Store,
    catalog: &Catalog,
    _auth: &AuthState,
) -> Result<Rows, OpError> {
    match op {
        Operation::SearchById { search, ids } => {
            let t = table(catalog, &search.database, &search.table)?;
            let search = &restrict_search(p, t, search, &[])?;
            let mut out = Vec::new();
            let now_ms = crate::util::time::now_ms();
            for id in ids {
                let Some(pk) = keys::encode_pk(id) else {
                    continue;
                };
                let raw = store.get_raw(t.id, &pk).map_err(|e| {
                    log::error!("read failed: {e}");
                    OpError::internal(e.to_string())
                })?;
                let Some(json) = raw.as_deref().and_then(StoredRecord::json_slice) else {
                    continue;
                };
                if let Ok(Value::Object(rec)) = serde_json::from_slice(json) {
                    // An expired record is never returned, swept yet or not.
                    if !t.expired(&rec, now_ms) {
                        out.push(query::project(rec, search.get_attributes.as_deref(), t));
                    }
                }
            }
            Ok(Box::new(out.into_iter().map(Ok)))
        }
        Operation::SearchByValue {
            search,
            attribute,
            value,
        } => {
            let t = table(catalog, &search.database, &search.table)?;
            let search = &restrict_search(p, t, search, &[attribute])?;
            let conds: Vec<Condition> = value_condition(attribute, value).into_iter().collect();
            search_rows(store, t, search, Logic::And, &conds)
        }
        Operation::SearchByConditions {
            search,
            operator,
            conditions,
        } => {
            let t = table(catalog, &search.database, &search.table)?;
            let mut matched = Vec::new();
            condition_attributes(conditions, &mut matched);
            let search = &restrict_search(p, t, search, &matched)?;
            search_rows(store, t, search, *operator, conditions)
        }
        _ => Err(OpError::internal("not a search")),
    }
}

/// Executes a read-only operation for `p`.
pub fn execute(
    op: &Operation,
    p: &Principal,
    store: &Store,
    catalog: &Catalog,
    auth: &AuthState,
) -> OpResult {
    match op {
        Operation::DescribeAll => {
            let mut out = Map::new();
            // In creation order (database ids grow), as Harper lists them.
            let mut dbs: Vec<(&String, u32)> =
                catalog.databases.iter().map(|(n, d)| (n, d.id)).collect();
            dbs.sort_by_key(|(_, id)| *id);
            for (db, _) in dbs {
                if db == SYSTEM_DB {
                    continue;
                }
                let d = describe_database_value(store, catalog, db, p);
                let visible = p.is_super_user() || d.as_object().is_some_and(|o| !o.is_empty());
                if visible {
                    out.insert(db.clone(), d);
                }
            }
            Ok(Value::Object(out))
        }
        Operation::DescribeDatabase { database } => {
            if !p.is_super_user() {
                if database == SYSTEM_DB {
                    return Err(OpError::forbidden(
                        vec![json!(format!(
                            "Your role does not have permission to view database metadata for '{database}'"
                        ))],
                        vec![],
                    ));
                }
                // Missing and hidden look alike to a restricted user (no existence oracle).
                let knows = p.role.as_ref().is_some_and(|r| r.knows_database(database));
                if catalog.database(database).is_none() || !knows {
                    return Err(OpError::forbidden(
                        vec![],
                        vec![json!(format!("database '{database}' does not exist"))],
                    ));
                }
            }
            if catalog.database(database).is_none() {
                return Err(OpError::database_not_found(database));
            }
            Ok(describe_database_value(store, catalog, database, p))
        }
        Operation::DescribeTable {
            database,
            table: name,
        } => {
            let knows = p.role.as_ref().is_some_and(|r| {
                database != SYSTEM_DB && r.knows_table(database, name) || r.is_super_user()
            });
            if !knows || (!p.is_super_user() && catalog.table(database, name).is_none()) {
                return Err(OpError::forbidden(
                    vec![],
                    vec![json!(format!("Table '{database}.{name}' does not exist"))],
                ));
            }
            let t = table(catalog, database, name)?;
            if !p.role.as_ref().is_some_and(|r| r.can_see(database, name)) {
                return Err(OpError::forbidden(
                    vec![
                        json!({"schema": database, "table": name, "required_table_permissions": ["read"], "required_attribute_permissions": []}),
                    ],
                    vec![],
                ));
            }
            Ok(describe_table_value(
                store,
                t,
                db_size(store, catalog, database),
                p,
            ))
        }
        Operation::SearchById { .. }
        | Operation::SearchByValue { .. }
        | Operation::SearchByConditions { .. } => Ok(Value::Array(
            rows(op, p, store, catalog, auth)?.collect::<Result<Vec<_>, _>>()?,
        )),
        Operation::ReadAuditLog {
            database,
            table: name,
            search,
        } => {
            let t = table(catalog, database, name)?;
            read_audit_log(store, catalog, t, search)
        }
        Operation::ListUsers => {
            let mut users: Vec<_> = auth.users.values().collect();
            users.sort_by(|a, b| a.username.cmp(&b.username));
            Ok(Value::Array(
                users.into_iter().map(|u| auth.user_view(u)).collect(),
            ))
        }
        Operation::UserInfo => auth
            .users
            .get(&p.username)
            .map(|u| auth.user_view(u))
            .ok_or_else(|| OpError::not_found(format!("User {} does not exist", p.username))),
        Operation::ListRoles => {
            let mut roles: Vec<_> = auth.roles.values().collect();
            roles.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(Value::Array(
                roles.into_iter().map(AuthState::role_view).collect(),
            ))
        }
        _ => Err(OpError::internal("not a read operation")),
    }
}

/// Checks that `p` may run an operation requiring `req` (Harper's 403 shapes).
pub fn authorize(
    p: &Principal,
    req: &super::parse::Requirement,
    catalog: &Catalog,
) -> Result<(), OpError> {
    use super::parse::Requirement;
    // Record operations never write the system tables, not even a super_user's: users, roles
    // and membership change only through their own operations, which keep their guards
    // (a plain `delete` of the super_user role would lock everyone out, cluster-wide).
    if let Requirement::Table(db, _, perms) = req {
        if db == SYSTEM_DB && perms.iter().any(|p| *p != TablePerm::Read) {
            return Err(OpError::new(
                403,
                "The 'system' database, tables and records are used internally by HarperDB and cannot be updated or removed.",
            ));
        }
    }
    if p.is_super_user() {
        return Ok(());
    }
    let Some(role) = &p.role else {
        return Err(OpError::forbidden(
            vec![json!(format!(
                "User {} has no role or permissions.  Please assign the user a valid role.",
                p.username
            ))],
            vec![],
        ));
    };
    match req {
        Requirement::Authenticated => Ok(()),
        Requirement::SuperUser(handler) => Err(OpError::super_user_only(handler)),
        Requirement::StructureAll(handler) => {
            if role.permission.get("structure_user") == Some(&serde_json::Value::Bool(true)) {
                Ok(())
            } else {
                Err(OpError::super_user_only(handler))
            }
        }
        Requirement::Structure(handler, op, db) => {
            if role.may_change_structure(db) {
                Ok(())
            } else if role.is_structure_user() {
                Err(OpError::forbidden(
                    vec![json!(format!(
                        "User does not have access to perform '{op}' against schema '{db}'"
                    ))],
                    vec![],
                ))
            } else {
                Err(OpError::super_user_only(handler))
            }
        }
        Requirement::Table(db, table, perms) => {
            // Only super_users read the system tables (Harper's answer names the permission).
            if db == SYSTEM_DB {
                return Err(OpError::forbidden(
                    vec![json!({
                        "schema": db,
                        "table": table,
                        "required_table_permissions": perms.iter().map(|p| p.name()).collect::<Vec<_>>(),
                        "required_attribute_permissions": [],
                    })],
                    vec![],
                ));
            }
            // Harper answers a plain user asking about a missing database or table -- or one
            // its role does not mention, so existence does not leak -- with a 403 naming the
            // invalid item, not a 404.
            if catalog.database(db).is_none() || !role.knows_database(db) {
                return Err(OpError::forbidden(
                    vec![],
                    vec![json!(format!("database '{db}' does not exist"))],
                ));
            }
            if catalog.table(db, table).is_none() || !role.knows_table(db, table) {
                return Err(OpError::forbidden(
                    vec![],
                    vec![json!(format!("Table '{db}.{table}' does not exist"))],
                ));
            }
            let missing: Vec<&str> = perms
                .iter()
                .filter(|p| !role.allows(db, table, **p))
                .map(|p| p.name())
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(OpError::forbidden(
                    vec![json!({
                        "schema": db,
                        "table": table,
                        "required_table_permissions": missing,
                        "required_attribute_permissions": [],
                    })],
                    vec![],
                ))
            }
        }
    }
}
