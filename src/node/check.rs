//! `skerry check`: verifies a stopped node's store without changing it. Every live record
//! has exactly the index entries its attributes call for, every index entry points to a live
//! record that calls for it, table statistics count the live records, and no origin's audit
//! log runs past the cursor that says how far that origin was applied.
//!
//! Reads only; memory stays bounded by one record at a time (and one entry per origin).

use crate::config::Config;
use crate::core::catalog::{Catalog, TableDef};
use crate::store::record::StoredRecord;
use crate::store::{Store, StoreOptions};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Problems listed in full; beyond this only counted.
const MAX_LISTED: usize = 100;

#[derive(Debug, Default)]
pub struct Report {
    pub tables: usize,
    pub records: u64,
    pub index_entries: u64,
    pub audit_entries: u64,
    pub problems: Vec<String>,
    pub more_problems: u64,
}

impl Report {
    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_LISTED {
            self.problems.push(p);
        } else {
            self.more_problems += 1;
        }
    }

    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

fn live_map(raw: &[u8]) -> Option<Map<String, Value>> {
    let rec = StoredRecord::decode(raw)?;
    let json = rec.json?;
    match serde_json::from_slice(&json) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

fn check_table(store: &Store, t: &TableDef, r: &mut Report) -> Result<(), String> {
    let name = format!("{}.{}", t.database, t.name);
    let mut live = 0u64;
    for kv in store.scan_table(t.id, None).map_err(|e| e.to_string())? {
        let (pk, raw) = kv.map_err(|e| e.to_string())?;
        let Some(rec) = StoredRecord::decode(&raw) else {
            r.problem(format!("{name}: record {pk:?} cannot be decoded"));
            continue;
        };
        if rec.is_tombstone() {
            continue;
        }
        let Some(map) = live_map(&raw) else {
            r.problem(format!("{name}: record {pk:?} is not a JSON object"));
            continue;
        };
        live += 1;
        for key in crate::core::records::index_keys(t, &map, &pk) {
            if !store.index_has(t.id, &key).map_err(|e| e.to_string())? {
                r.problem(format!(
                    "{name}: record {pk:?} is missing its index entry {key:?}"
                ));
            }
        }
    }
    r.records += live;
    for k in store.scan_index_all(t.id).map_err(|e| e.to_string())? {
        let key = k.map_err(|e| e.to_string())?;
        r.index_entries += 1;
        let pk = key
            .get(4..)
            .and_then(|rest| crate::store::keys::scalar_len(rest).map(|n| &rest[n..]));
        let Some(pk) = pk else {
            r.problem(format!("{name}: index entry {key:?} cannot be decoded"));
            continue;
        };
        let wanted = store
            .get_raw(t.id, pk)
            .map_err(|e| e.to_string())?
            .and_then(|raw| live_map(&raw))
            .map(|m| crate::core::records::index_keys(t, &m, pk));
        match wanted {
            None => r.problem(format!(
                "{name}: index entry {key:?} points to no live record"
            )),
            Some(keys) if !keys.iter().any(|k| k[..] == key[..]) => r.problem(format!(
                "{name}: index entry {key:?} does not match its record's values"
            )),
            Some(_) => {}
        }
    }
    let stats = store.table_stats(t.id).map_err(|e| e.to_string())?;
    if stats.count != live {
        r.problem(format!(
            "{name}: statistics count {} records, the table holds {live}",
            stats.count
        ));
    }
    // The digest kept with every write must be the digest of what the table holds (an unknown
    // digest, from before digests existed, is computed at the next start).
    if let Some(kept) = stats.digest {
        let names = store.origin_names().map_err(|e| e.to_string())?;
        let (scanned, _) = store.scan_digest(t.id, &names).map_err(|e| e.to_string())?;
        if kept != scanned {
            r.problem(format!(
                "{name}: statistics hold digest {}, the records digest to {}",
                crate::store::digest::to_hex(kept),
                crate::store::digest::to_hex(scanned)
            ));
        }
    }
    Ok(())
}

/// Checks the store of `cfg` (the node must be stopped: the store is locked while it runs).
pub fn check(cfg: &Config) -> Result<Report, String> {
    let store = Store::open(
        &cfg.root_path,
        &StoreOptions {
            cache_size: cfg.storage.cache_size,
            max_write_buffer_size: cfg.storage.max_write_buffer_size,
        },
    )
    .map_err(|e| e.to_string())?;
    let recovered = store.recover().map_err(|e| e.to_string())?;
    let Some(json) = recovered.catalog_json else {
        return Ok(Report::default());
    };
    let mut catalog: Catalog =
        serde_json::from_slice(&json).map_err(|e| format!("the catalog is unreadable: {e}"))?;
    catalog.reindex();
    let mut r = Report::default();
    for d in catalog.databases.values() {
        for t in d.tables.values() {
            r.tables += 1;
            check_table(&store, t, &mut r)?;
        }
        // No origin's audit log may run past its cursor (what was applied is what is logged).
        let cursors = store.cursor_vector(d.id).map_err(|e| e.to_string())?;
        let names = store.origin_names().map_err(|e| e.to_string())?;
        let mut newest: HashMap<u32, u64> = HashMap::new();
        for e in store.audit_of_db(d.id) {
            let (origin, version, _) = e.map_err(|e| e.to_string())?;
            r.audit_entries += 1;
            let v = newest.entry(origin).or_insert(0);
            *v = (*v).max(version);
        }
        for (origin, version) in newest {
            let name = names
                .get(&origin)
                .cloned()
                .unwrap_or_else(|| format!("#{origin}"));
            let db_name = catalog
                .databases
                .iter()
                .find(|(_, x)| x.id == d.id)
                .map(|(n, _)| n.clone())
                .unwrap_or_default();
            match cursors.get(&name) {
                Some(c) if *c >= version => {}
                other => r.problem(format!(
                    "{db_name}: the audit log holds origin {name} up to version {version}, its cursor says {other:?}"
                )),
            }
        }
    }
    Ok(r)
}
