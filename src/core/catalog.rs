//! The catalog: databases, tables, primary keys and attributes.
//!
//! Owned and changed only by the core thread; HTTP workers read an immutable published copy.
//! Tables and databases get small numeric ids that name their storage (so a table name can be any
//! text a user sends without becoming a file name). Ids are local to a node; the wire always
//! carries names.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Name of the internal database (users, roles, cluster membership).
pub const SYSTEM_DB: &str = "system";
pub const HDB_USER: &str = "hdb_user";
pub const HDB_ROLE: &str = "hdb_role";
pub const HDB_NODES: &str = "hdb_nodes";
pub const HDB_CERTIFICATE: &str = "hdb_certificate";
/// Background jobs (bulk loads, exports, clean-ups): node-local, like Harper's `hdb_job`.
pub const HDB_JOB: &str = "hdb_job";

/// The system tables: name, primary key, and whether the table replicates. Node-local tables
/// (certificates, jobs) never leave the node: their writes make no audit entry, a full copy
/// skips them and a receiver refuses them (`repl::validate`).
const SYSTEM_TABLES: [(&str, &str, bool); 5] = [
    (HDB_USER, "username", true),
    (HDB_ROLE, "id", true),
    (HDB_NODES, "name", true),
    (HDB_CERTIFICATE, "name", false),
    (HDB_JOB, "id", false),
];

/// Timestamps every record of a dynamic table carries (float ms, Harper's names).
pub const CREATED_TIME: &str = "__createdtime__";
pub const UPDATED_TIME: &str = "__updatedtime__";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Catalog {
    pub databases: BTreeMap<String, DatabaseDef>,
    pub next_db_id: u32,
    pub next_table_id: u32,
    /// Replicated drops: database → table → version of the drop (the empty table name stands
    /// for the whole database). A peer's write, creation or copied row of a table that is not
    /// here and was dropped at or after its version is ignored: records made before a drop
    /// that reach this node after it (from a node that missed the drop, a stale copy) must not
    /// bring the table back (Harper's open bug #1212). Never purged (a few bytes per drop).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drops: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DatabaseDef {
    pub id: u32,
    pub tables: BTreeMap<String, TableDef>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableDef {
    pub id: u32,
    pub database: String,
    pub name: String,
    pub primary_key: String,
    pub attributes: Vec<AttributeDef>,
    /// Created with an explicit `attributes` list: new properties are stored but not added.
    pub schema_defined: bool,
    /// False for node-local system tables, which never leave the node.
    pub replicate: bool,
    pub next_attr_id: u32,
    /// Attributes dropped from this table: their values stay in stored records, so if one comes
    /// back its index is rebuilt from the records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
    /// Harper's `expiration` (seconds): a record older than `__updatedtime__ + expiration` is
    /// never returned and is evicted locally by the expiry sweep (see `node::expiry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
    /// Version of the creation this definition comes from (0: unknown, e.g. made by a full
    /// copy). A replicated drop older than the creation belongs to an earlier table of the
    /// same name and leaves this one alone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created: u64,
    /// Position of each attribute in `attributes` by name: lookups are O(1) however many
    /// attributes a dynamic table grows (a linear search made one insert adding 40,000
    /// attributes block the core for seconds). Rebuilt after loading (`Catalog::reindex`).
    #[serde(skip)]
    by_name: std::collections::HashMap<String, usize>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttributeDef {
    pub name: String,
    pub id: u32,
    pub indexed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
}

impl TableDef {
    /// Whether the stored record `rec` has expired at `now_ms` (tables with `expiration`
    /// only; a record without a numeric `__updatedtime__` never expires).
    pub fn expired(&self, rec: &serde_json::Map<String, serde_json::Value>, now_ms: u64) -> bool {
        let Some(secs) = self.expiration else {
            return false;
        };
        rec.get(UPDATED_TIME)
            .and_then(serde_json::Value::as_f64)
            .is_some_and(|t| t + secs.saturating_mul(1000) as f64 <= now_ms as f64)
    }

    pub fn attribute(&self, name: &str) -> Option<&AttributeDef> {
        self.by_name.get(name).and_then(|&i| self.attributes.get(i))
    }

    pub fn has_attribute(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn reindex(&mut self) {
        self.by_name = self
            .attributes
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.clone(), i))
            .collect();
    }

    /// Removes an attribute; returns it if it was there.
    pub fn remove_attribute(&mut self, name: &str) -> Option<AttributeDef> {
        let pos = *self.by_name.get(name)?;
        let a = self.attributes.remove(pos);
        self.reindex();
        Some(a)
    }

    /// Adds an attribute if missing; returns true when it was new.
    pub fn add_attribute(&mut self, name: &str, indexed: bool, r#type: Option<String>) -> bool {
        if self.has_attribute(name) {
            return false;
        }
        self.by_name.insert(name.to_string(), self.attributes.len());
        self.attributes.push(AttributeDef {
            name: name.to_string(),
            id: self.next_attr_id,
            indexed,
            r#type,
        });
        self.next_attr_id += 1;
        true
    }
}

impl Catalog {
    /// Rebuilds the lookup indexes a stored catalog does not carry (call after loading one).
    pub fn reindex(&mut self) {
        for d in self.databases.values_mut() {
            for t in d.tables.values_mut() {
                t.reindex();
            }
        }
    }

    /// A catalog holding only the `system` database and its tables.
    pub fn with_system() -> Self {
        let mut c = Catalog::default();
        c.ensure_system_tables();
        c
    }

    /// Creates the system database and any system table it lacks (a store written by an
    /// older release has no `hdb_job`); returns true when something was created.
    pub fn ensure_system_tables(&mut self) -> bool {
        let mut changed = self.ensure_database(SYSTEM_DB);
        for (t, pk, replicate) in SYSTEM_TABLES {
            if self.table(SYSTEM_DB, t).is_some() {
                continue;
            }
            let id = self.create_table(SYSTEM_DB, t, pk, &[], false);
            if let Some(def) = self.table_mut_by_id(id) {
                def.replicate = replicate;
            }
            changed = true;
        }
        changed
    }

    pub fn database(&self, db: &str) -> Option<&DatabaseDef> {
        self.databases.get(db)
    }

    pub fn table(&self, db: &str, table: &str) -> Option<&TableDef> {
        self.databases.get(db)?.tables.get(table)
    }

    pub fn table_mut(&mut self, db: &str, table: &str) -> Option<&mut TableDef> {
        self.databases.get_mut(db)?.tables.get_mut(table)
    }

    fn table_mut_by_id(&mut self, id: u32) -> Option<&mut TableDef> {
        self.databases
            .values_mut()
            .flat_map(|d| d.tables.values_mut())
            .find(|t| t.id == id)
    }

    /// Creates the database if missing; returns true when it was created.
    pub fn ensure_database(&mut self, db: &str) -> bool {
        if self.databases.contains_key(db) {
            return false;
        }
        let id = self.next_db_id;
        self.next_db_id += 1;
        self.databases.insert(
            db.to_string(),
            DatabaseDef {
                id,
                tables: BTreeMap::new(),
            },
        );
        true
    }

    /// Creates a table (and its database) and returns its id. `attributes` non-empty means a
    /// schema-defined table; otherwise the table is dynamic and gets Harper's timestamp
    /// attributes. The caller has checked that the table does not exist yet.
    pub fn create_table(
        &mut self,
        db: &str,
        table: &str,
        primary_key: &str,
        attributes: &[(String, Option<String>)],
        schema_defined: bool,
    ) -> u32 {
        self.ensure_database(db);
        let id = self.next_table_id;
        self.next_table_id += 1;
        let mut def = TableDef {
            id,
            database: db.to_string(),
            name: table.to_string(),
            primary_key: primary_key.to_string(),
            attributes: Vec::new(),
            schema_defined,
            replicate: true,
            next_attr_id: 0,
            dropped: Vec::new(),
            expiration: None,
            created: 0,
            by_name: Default::default(),
        };
        // The key's own declared type (Harper's `{"name": "id", "type": "Int",
        // "is_primary_key": true}`) is checked like any other.
        let pk_type = attributes
            .iter()
            .find(|(n, _)| n == primary_key)
            .and_then(|(_, t)| t.clone());
        def.add_attribute(primary_key, true, pk_type);
        if !schema_defined {
            def.add_attribute(CREATED_TIME, true, None);
            def.add_attribute(UPDATED_TIME, true, None);
        }
        for (name, ty) in attributes {
            def.add_attribute(name, true, ty.clone());
        }
        if let Some(d) = self.databases.get_mut(db) {
            d.tables.insert(table.to_string(), def);
        }
        id
    }

    pub fn drop_table(&mut self, db: &str, table: &str) -> Option<TableDef> {
        self.databases.get_mut(db)?.tables.remove(table)
    }

    pub fn drop_database(&mut self, db: &str) -> Option<DatabaseDef> {
        self.databases.remove(db)
    }

    /// Remembers a replicated drop of `db.table` (`table` empty: the whole database) at
    /// `version`.
    pub fn record_drop(&mut self, db: &str, table: &str, version: u64) {
        let v = self
            .drops
            .entry(db.to_string())
            .or_default()
            .entry(table.to_string())
            .or_insert(0);
        *v = (*v).max(version);
    }

    /// The version of the latest replicated drop of `db.table` or of `db` (0: never dropped).
    pub fn dropped_at(&self, db: &str, table: &str) -> u64 {
        self.drops.get(db).map_or(0, |t| {
            let whole = t.get("").copied().unwrap_or(0);
            t.get(table).copied().unwrap_or(0).max(whole)
        })
    }
}

/// Why a database, table or attribute name is refused (None = acceptable).
///
/// Names become part of keys, paths in error messages and URLs; backticks and slashes are refused
/// as Harper refuses them, empty and over-long names because nothing good comes of them.
pub fn invalid_name(kind: &str, name: &str) -> Option<String> {
    if name.is_empty() {
        return Some(format!("{kind} name cannot be empty"));
    }
    if name.len() > 250 {
        return Some(format!("{kind} name cannot be longer than 250 bytes"));
    }
    if name.contains('`') || name.contains('/') {
        return Some(if kind == "Attribute" {
            "Attribute names cannot include backticks or forward slashes".to_string()
        } else {
            format!("{kind} names cannot include backticks or forward slashes")
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_table_gets_pk_and_timestamps_in_harpers_order() {
        let mut c = Catalog::with_system();
        c.create_table("dev", "dog", "id", &[], false);
        let t = c.table("dev", "dog").unwrap();
        let names: Vec<_> = t.attributes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["id", CREATED_TIME, UPDATED_TIME]);
        assert_ne!(t.id, c.table(SYSTEM_DB, HDB_USER).unwrap().id);
    }

    #[test]
    fn schema_defined_table_has_only_declared_attributes() {
        let mut c = Catalog::default();
        c.create_table(
            "dev",
            "cat",
            "id",
            &[("name".into(), Some("String".into()))],
            true,
        );
        let t = c.table("dev", "cat").unwrap();
        assert_eq!(t.attributes.len(), 2);
        assert!(t.schema_defined);
    }

    #[test]
    fn names_with_backticks_or_slashes_are_refused() {
        assert!(invalid_name("Attribute", "a`b").is_some());
        assert!(invalid_name("Table", "a/b").is_some());
        assert!(invalid_name("Table", "").is_some());
        assert!(invalid_name("Table", "dog").is_none());
    }

    #[test]
    fn node_local_tables_do_not_replicate() {
        let c = Catalog::with_system();
        assert!(!c.table(SYSTEM_DB, HDB_CERTIFICATE).unwrap().replicate);
        assert!(!c.table(SYSTEM_DB, HDB_JOB).unwrap().replicate);
        assert!(c.table(SYSTEM_DB, HDB_NODES).unwrap().replicate);
    }

    #[test]
    fn a_catalog_from_an_older_release_gains_the_jobs_table_once() {
        let mut c = Catalog::with_system();
        c.drop_table(SYSTEM_DB, HDB_JOB);
        let user_id = c.table(SYSTEM_DB, HDB_USER).unwrap().id;
        assert!(c.ensure_system_tables());
        assert!(!c.table(SYSTEM_DB, HDB_JOB).unwrap().replicate);
        assert_eq!(c.table(SYSTEM_DB, HDB_USER).unwrap().id, user_id);
        assert!(!c.ensure_system_tables());
    }
}
