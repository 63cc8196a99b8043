//! Clean-up jobs: `delete_records_before` (alias `delete_files_before`) and
//! `delete_audit_logs_before`.
//!
//! Both find what to remove by reading the store, then remove it through the core in bounded
//! batches: records as ordinary deletes (tombstones that replicate, recorded under the job's
//! user), audit entries as `TrimAudit` edits that raise the origin's low watermark, so a peer
//! whose replication cursor is below the trimmed point is given a full copy instead of a
//! stream with a hole (the rule `replication.auditRetention` pruning follows). Must never
//! delete what it has not re-checked against the stored record.

use super::{JobCtx, Outcome};
use crate::core::catalog::{Catalog, TableDef, CREATED_TIME};
use crate::core::hlc;
use crate::core::op::{AuditEdit, WriteOp};
use crate::core::txn::{self, TxnOp};
use crate::store::keys;
use crate::store::record::StoredRecord;
use serde_json::Value;
use std::ops::Bound;

/// Records deleted per transaction.
const DELETE_BATCH: usize = 1_000;
/// Audit entries edited per transaction, and bytes of rewritten entries.
const TRIM_BATCH: usize = 1_000;
const TRIM_BYTES: usize = 1 << 20;

fn table<'a>(catalog: &'a Catalog, db: &str, name: &str) -> Result<&'a TableDef, String> {
    if catalog.database(db).is_none() {
        return Err(format!("database '{db}' does not exist"));
    }
    catalog
        .table(db, name)
        .ok_or_else(|| format!("Table '{db}.{name}' does not exist"))
}

/// The record's `__createdtime__` if it is live and created before `before_ms`.
fn created_before(raw: &[u8], before_ms: f64) -> bool {
    let Some(json) = StoredRecord::json_slice(raw) else {
        return false;
    };
    match serde_json::from_slice::<serde_json::Map<String, Value>>(json) {
        Ok(m) => m
            .get(CREATED_TIME)
            .and_then(Value::as_f64)
            .is_some_and(|t| t < before_ms),
        Err(_) => false,
    }
}

/// Deletes every record of `db.table` created before `before_ms` (by `__createdtime__`, found
/// through its index and re-checked on the record): Harper's `N of M records successfully
/// deleted`, or `No records found to delete`.
pub fn delete_records_before(
    ctx: &JobCtx,
    db: &str,
    name: &str,
    before_ms: f64,
) -> Result<Outcome, String> {
    let catalog = ctx.catalog();
    let t = table(&catalog, db, name)?.clone();
    drop(catalog);
    let Some(attr) = t.attribute(CREATED_TIME).map(|a| a.id) else {
        return Ok(Outcome::message("No records found to delete"));
    };
    let mut end = Vec::new();
    keys::encode_scalar(&serde_json::json!(before_ms), &mut end);
    let storage = |e: crate::store::StoreError| format!("cannot read {db}.{name}: {e}");
    let (mut found, mut deleted) = (0usize, 0usize);
    let mut start: Bound<Vec<u8>> = Bound::Unbounded;
    loop {
        ctx.check_stop()?;
        // One bounded chunk of candidates per transaction; the scan resumes after the last
        // index key seen, so a stale index entry is never visited twice.
        let mut ids = Vec::new();
        let mut last = None;
        for item in ctx
            .store()
            .scan_index(
                t.id,
                attr,
                start.clone(),
                Bound::Excluded(end.clone()),
                false,
            )
            .map_err(storage)?
        {
            let k = item.map_err(storage)?;
            let Some(n) = keys::scalar_len(&k) else {
                continue;
            };
            let pk = &k[n..];
            last = Some(k.clone());
            let raw = ctx.store().get_raw(t.id, pk).map_err(storage)?;
            if raw.as_deref().is_some_and(|r| created_before(r, before_ms)) {
                if let Some(id) = keys::decode_pk(pk) {
                    ids.push(id);
                }
            }
            if ids.len() >= DELETE_BATCH {
                break;
            }
        }
        let Some(last) = last else {
            break;
        };
        start = Bound::Excluded(last);
        if ids.is_empty() {
            continue;
        }
        found += ids.len();
        let answer = ctx
            .core()
            .execute(
                WriteOp::Delete {
                    database: db.to_string(),
                    table: name.to_string(),
                    ids,
                },
                ctx.actor(),
            )
            .map_err(|e| e.message().to_string())?;
        deleted += answer
            .get("deleted_hashes")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
    }
    if found == 0 {
        return Ok(Outcome::message("No records found to delete"));
    }
    let noun = if found == 1 { "record" } else { "records" };
    Ok(Outcome::message(format!(
        "{deleted} of {found} {noun} successfully deleted"
    )))
}

/// The first version at or after epoch milliseconds `ms` (a fraction counts: versions carry
/// sub-millisecond counters).
fn version_at(ms: f64) -> u64 {
    // NaN and negative times: before everything.
    if ms.is_nan() || ms <= 0.0 {
        return 0;
    }
    let v = (ms * (1u64 << hlc::COUNTER_BITS) as f64).ceil();
    if v >= u64::MAX as f64 {
        u64::MAX
    } else {
        v as u64
    }
}

/// A record write (or delete) of `table`: what `delete_audit_logs_before` removes. Schema
/// changes stay (the log of a table's creation is what lets a peer learn it).
fn is_record_op_of(op: &TxnOp, table: &str) -> bool {
    matches!(op, TxnOp::Put { table: t, .. } | TxnOp::Delete { table: t, .. } if t == table)
}

/// Removes `db.table`'s entries older than `before_ms` from the audit log, every origin's:
/// an entry that only wrote that table goes; one that also wrote others is rewritten without
/// it. Harper's `Successfully completed job: <id>`.
pub fn delete_audit_logs_before(
    ctx: &JobCtx,
    db: &str,
    name: &str,
    before_ms: f64,
) -> Result<Outcome, String> {
    let catalog = ctx.catalog();
    let t = table(&catalog, db, name)?;
    let db_id = catalog.database(db).map(|d| d.id).unwrap_or(0);
    let tname = t.name.clone();
    drop(catalog);
    let cut = version_at(before_ms);
    let storage = |e: crate::store::StoreError| format!("cannot read the audit log: {e}");
    let mut origins: Vec<u32> = ctx
        .store()
        .origin_names()
        .map_err(storage)?
        .into_keys()
        .collect();
    origins.sort_unstable();
    for origin in origins {
        let mut after = 0u64;
        loop {
            ctx.check_stop()?;
            let mut edits = Vec::new();
            let mut bytes = 0usize;
            let mut exhausted = true;
            for item in ctx.store().audit_after(db_id, origin, after) {
                let (version, ops) = item.map_err(storage)?;
                if version >= cut {
                    break;
                }
                after = version;
                let Ok(entry) = txn::decode_entry(&ops) else {
                    continue;
                };
                if !entry.ops.iter().any(|op| is_record_op_of(op, &tname)) {
                    continue;
                }
                let kept: Vec<TxnOp> = entry
                    .ops
                    .into_iter()
                    .filter(|op| !is_record_op_of(op, &tname))
                    .collect();
                let new =
                    (!kept.is_empty()).then(|| txn::encode_ops(&entry.actor, entry.kind, &kept));
                bytes += new.as_ref().map_or(0, Vec::len);
                edits.push(AuditEdit {
                    origin,
                    version,
                    ops: new,
                });
                if edits.len() >= TRIM_BATCH || bytes >= TRIM_BYTES {
                    exhausted = false;
                    break;
                }
            }
            if !edits.is_empty() {
                ctx.core()
                    .execute(
                        WriteOp::TrimAudit {
                            database: db.to_string(),
                            edits,
                        },
                        ctx.actor(),
                    )
                    .map_err(|e| e.message().to_string())?;
            }
            if exhausted {
                break;
            }
        }
    }
    Ok(Outcome::message(format!(
        "Successfully completed job: {}",
        ctx.id
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_in_milliseconds_keeps_entries_at_or_after_it() {
        let v = hlc::from_ms(1_796_298_320_532);
        assert_eq!(version_at(1_796_298_320_532.0), v);
        // An entry 0.25 ms later stays; one just before goes.
        assert!(version_at(1_796_298_320_532.25) > v);
        assert_eq!(version_at(-5.0), 0);
        assert_eq!(version_at(f64::NAN), 0);
    }
}
