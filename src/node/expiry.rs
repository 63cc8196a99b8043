//! The expiry sweep: evicts records of tables with `expiration` once they are older than
//! `__updatedtime__ + expiration`.
//!
//! One thread reads the store (like any reader) to find expired records and hands their keys
//! to the core as a `WriteOp::Evict`, which re-checks each and removes it locally: no audit
//! entry, so nothing replicates. Every node decides its own evictions, so an eviction never
//! fights a newer write from another node. Reads filter expired records themselves, so the
//! sweep's pace only bounds how long an expired record takes disk space.
//!
//! Must never: write to the store itself, or evict anything the core has not re-checked.

use super::driver::{CoreHandle, Shared};
use crate::core::op::WriteOp;
use crate::core::txn::Actor;
use crate::store::record::StoredRecord;
use crate::store::Store;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Keys per eviction batch: bounds what one core step does (and its memory).
const BATCH: usize = 1000;

/// How often a table is swept: a quarter of its expiration, between 1 s and 60 s.
fn period_ms(expiration_secs: u64) -> u64 {
    (expiration_secs.saturating_mul(250)).clamp(1_000, 60_000)
}

/// Starts the sweep; it ends when `stop`'s sender is dropped.
pub fn start(store: Store, shared: Arc<Shared>, core: CoreHandle, stop: Receiver<()>) {
    let spawned = std::thread::Builder::new()
        .name("expiry".into())
        .spawn(move || run(&store, &shared, &core, &stop));
    if let Err(e) = spawned {
        log::error!("cannot start the expiry sweep: {e}");
    }
}

fn run(store: &Store, shared: &Shared, core: &CoreHandle, stop: &Receiver<()>) {
    // Next sweep time per table id.
    let mut next: HashMap<u32, u64> = HashMap::new();
    loop {
        match stop.recv_timeout(Duration::from_secs(1)) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let catalog = shared.catalog.load();
        let now = crate::util::time::now_ms();
        for db in catalog.databases.values() {
            for t in db.tables.values() {
                let Some(secs) = t.expiration else {
                    continue;
                };
                if next.get(&t.id).is_some_and(|at| *at > now) {
                    continue;
                }
                next.insert(t.id, now + period_ms(secs));
                if let Err(e) = sweep(store, core, t, now) {
                    log::warn!("expiry sweep of {}.{}: {e}", t.database, t.name);
                }
            }
        }
    }
}

fn sweep(
    store: &Store,
    core: &CoreHandle,
    t: &crate::core::catalog::TableDef,
    now: u64,
) -> Result<(), String> {
    let mut pks = Vec::new();
    let evict = |pks: Vec<Vec<u8>>| -> Result<(), String> {
        core.execute(
            WriteOp::Evict {
                database: t.database.clone(),
                table: t.name.clone(),
                pks,
            },
            Actor::None,
        )
        .map(|_| ())
        .map_err(|e| e.message().to_string())
    };
    for item in store.scan_table(t.id, None).map_err(|e| e.to_string())? {
        let (pk, raw) = item.map_err(|e| e.to_string())?;
        let Some(json) = StoredRecord::json_slice(&raw) else {
            continue;
        };
        let Ok(rec) = serde_json::from_slice::<Map<String, Value>>(json) else {
            continue;
        };
        if t.expired(&rec, now) {
            pks.push(pk.to_vec());
            if pks.len() == BATCH {
                evict(std::mem::take(&mut pks))?;
            }
        }
    }
    if !pks.is_empty() {
        evict(pks)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sweep_period_is_a_quarter_of_the_expiration_within_bounds() {
        assert_eq!(super::period_ms(1), 1_000);
        assert_eq!(super::period_ms(20), 5_000);
        assert_eq!(super::period_ms(86_400), 60_000);
    }
}
