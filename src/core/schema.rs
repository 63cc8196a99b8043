//! Schema operations: databases, tables and attributes. Creations are logged as transactions so
//! peers learn them (a database in the `system` log, tables and attributes in their database's
//! log); drops stay local unless asked to replicate (`replicated: true`), as in Harper.

use super::catalog::{invalid_name, SYSTEM_DB};
use super::error::{OpError, OpResult};
use super::txn::TxnOp;
use super::Core;
use crate::store::Write;
use serde_json::json;
use std::sync::Arc;

fn system_is_read_only() -> OpError {
    OpError::new(
        403,
        "The 'system' database, tables and records are used internally by HarperDB and cannot be updated or removed.",
    )
}

impl<R> Core<R> {
    /// The definition of a table a schema operation may change: not in `system`, and both the
    /// database and the table exist (Harper's 403 / 404 errors otherwise, in that order).
    fn user_table(&self, db: &str, table: &str) -> Result<&super::catalog::TableDef, OpError> {
        if db == SYSTEM_DB {
            return Err(system_is_read_only());
        }
        if self.catalog.database(db).is_none() {
            return Err(OpError::database_not_found(db));
        }
        self.catalog
            .table(db, table)
            .ok_or_else(|| OpError::table_not_found(db, table))
    }

    /// Logs schema ops as one local transaction in `db`'s audit log.
    fn log_schema(&mut self, db: &str, now_ms: u64, ops: Vec<TxnOp>) -> u64 {
        let version = self.hlc.next(now_ms);
        let mut w = super::txn::OpsWriter::default();
        for op in &ops {
            w.op(op);
        }
        self.commit_local_txn(db, version, w, super::txn::TxnKind::None);
        version
    }

    /// Creates a database if missing and logs it in the system log; returns true if created.
    fn ensure_database_logged(&mut self, db: &str, now_ms: u64) -> bool {
        if !Arc::make_mut(&mut self.catalog).ensure_database(db) {
            return false;
        }
        self.mark_catalog_changed();
        self.log_schema(
            SYSTEM_DB,
            now_ms,
            vec![TxnOp::CreateDatabase {
                name: db.to_string(),
            }],
        );
        true
    }

    pub(super) fn create_database(&mut self, db: &str, now_ms: u64) -> OpResult {
        if let Some(msg) = invalid_name("Database", db) {
            return Err(OpError::bad_request(msg));
        }
        if self.catalog.database(db).is_some() {
            return Err(OpError::bad_request(format!(
                "database '{db}' already exists"
            )));
        }
        self.ensure_database_logged(db, now_ms);
        Ok(json!({ "message": format!("database '{db}' successfully created") }))
    }

    pub(super) fn drop_database(&mut self, db: &str, replicated: bool, now_ms: u64) -> OpResult {
        if db == SYSTEM_DB {
            return Err(system_is_read_only());
        }
        let Some(def) = self.catalog.database(db).cloned() else {
            return Err(OpError::database_not_found(db));
        };
        if replicated {
            let version = self.log_schema(
                SYSTEM_DB,
                now_ms,
                vec![TxnOp::DropDatabase {
                    name: db.to_string(),
                }],
            );
            Arc::make_mut(&mut self.catalog).record_drop(db, "", version);
        }
        Arc::make_mut(&mut self.catalog).drop_database(db);
        self.mark_catalog_changed();
        for t in def.tables.values() {
            self.stats.remove(&t.id);
            self.writes.push(Write::DropTableStorage { table: t.id });
        }
        self.cursors.remove(&def.id);
        self.writes.push(Write::DropDatabaseLog { db: def.id });
        Ok(json!({ "message": format!("successfully deleted '{db}'") }))
    }

    // The fields of `WriteOp::CreateTable`, one by one (the op is matched apart in `step`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_table(
        &mut self,
        db: &str,
        table: &str,
        primary_key: &str,
        attributes: Vec<(String, Option<String>)>,
        schema_defined: bool,
        expiration: Option<u64>,
        now_ms: u64,
    ) -> OpResult {
        for (kind, name) in [("Database", db), ("Table", table)] {
            if let Some(msg) = invalid_name(kind, name) {
                return Err(OpError::bad_request(msg));
            }
        }
        for name in std::iter::once(primary_key).chain(attributes.iter().map(|a| a.0.as_str())) {
            if let Some(msg) = invalid_name("Attribute", name) {
                return Err(OpError::bad_request(msg));
            }
        }
        if db == SYSTEM_DB {
            return Err(system_is_read_only());
        }
        if self.catalog.table(db, table).is_some() {
            return Err(OpError::bad_request(format!(
                "Table '{table}' already exists in '{db}'"
            )));
        }
        self.ensure_database_logged(db, now_ms);
        // The key stays in the list only when it declares a type (older entries never carry
        // it, and peers add the key first whatever the list says).
        let attrs: Vec<(String, Option<String>)> = attributes
            .into_iter()
            .filter(|(n, t)| n != primary_key || t.is_some())
            .collect();
        Arc::make_mut(&mut self.catalog).create_table(
            db,
            table,
            primary_key,
            &attrs,
            schema_defined,
        );
        if let Some(t) = Arc::make_mut(&mut self.catalog).table_mut(db, table) {
            t.expiration = expiration;
        }
        self.mark_catalog_changed();
        let version = self.log_schema(
            db,
            now_ms,
            vec![TxnOp::CreateTable {
                table: table.to_string(),
                pk_attr: primary_key.to_string(),
                attributes: attrs,
                schema_defined,
                expiration,
            }],
        );
        if let Some(t) = Arc::make_mut(&mut self.catalog).table_mut(db, table) {
            t.created = version;
        }
        Ok(json!({ "message": format!("table '{db}.{table}' successfully created.") }))
    }

    pub(super) fn drop_table(
        &mut self,
        db: &str,
        table: &str,
        replicated: bool,
        now_ms: u64,
    ) -> OpResult {
        let def = self.user_table(db, table)?.clone();
        if replicated {
            let version = self.log_schema(
                db,
                now_ms,
                vec![TxnOp::DropTable {
                    table: table.to_string(),
                }],
            );
            Arc::make_mut(&mut self.catalog).record_drop(db, table, version);
        }
        Arc::make_mut(&mut self.catalog).drop_table(db, table);
        self.mark_catalog_changed();
        self.stats.remove(&def.id);
        self.writes.push(Write::DropTableStorage { table: def.id });
        Ok(json!({ "message": format!("successfully deleted table '{db}.{table}'") }))
    }

    pub(super) fn create_attribute(
        &mut self,
        db: &str,
        table: &str,
        attribute: &str,
        now_ms: u64,
    ) -> OpResult {
        if let Some(msg) = invalid_name("Attribute", attribute) {
            return Err(OpError::bad_request(msg));
        }
        let def = self.user_table(db, table)?;
        if def.attribute(attribute).is_some() {
            return Err(OpError::bad_request(format!(
                "attribute '{attribute}' already exists in {db}.{table}"
            )));
        }
        let mut backfill = None;
        if let Some(t) = Arc::make_mut(&mut self.catalog).table_mut(db, table) {
            t.add_attribute(attribute, true, None);
            t.dropped.retain(|d| d != attribute);
            if let Some(a) = t.attribute(attribute) {
                backfill = Some((t.id, a.id));
            }
        }
        self.mark_catalog_changed();
        // Records may already hold this property (schema-defined tables store undeclared ones,
        // and dropped attributes keep their values): index them.
        if let Some((table_id, attr_id)) = backfill {
            if self.stats.get(&table_id).is_some_and(|s| s.count > 0) {
                self.writes.push(Write::BackfillIndex {
                    table: table_id,
                    attribute: attr_id,
                    name: attribute.to_string(),
                });
            }
        }
        self.log_schema(
            db,
            now_ms,
            vec![TxnOp::CreateAttribute {
                table: table.to_string(),
                attribute: attribute.to_string(),
            }],
        );
        Ok(
            json!({ "message": format!("attribute '{db}.{table}.{attribute}' successfully created.") }),
        )
    }

    pub(super) fn drop_attribute(
        &mut self,
        db: &str,
        table: &str,
        attribute: &str,
        now_ms: u64,
    ) -> OpResult {
        let def = self.user_table(db, table)?.clone();
        if def.primary_key == attribute {
            return Err(OpError::bad_request("You cannot drop a hash attribute"));
        }
        if attribute == super::catalog::CREATED_TIME || attribute == super::catalog::UPDATED_TIME {
            return Err(OpError::bad_request(format!(
                "cannot drop internal timestamp attribute: {attribute}"
            )));
        }
        let Some(attr) = def.attribute(attribute).cloned() else {
            return Err(OpError::not_found(format!(
                "Attribute '{attribute}' does not exist on '{db}.{table}'"
            )));
        };
        if let Some(t) = Arc::make_mut(&mut self.catalog).table_mut(db, table) {
            t.remove_attribute(attribute);
            if !t.dropped.iter().any(|d| d == attribute) {
                t.dropped.push(attribute.to_string());
            }
        }
        self.mark_catalog_changed();
        self.writes.push(Write::DropIndexAttribute {
            table: def.id,
            attribute: attr.id,
        });
        self.log_schema(
            db,
            now_ms,
            vec![TxnOp::DropAttribute {
                table: table.to_string(),
                attribute: attribute.to_string(),
            }],
        );
        Ok(json!({ "message": format!("successfully deleted attribute '{attribute}'") }))
    }
}
