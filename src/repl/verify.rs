//! Comparing this node's data with its peers' by table digests (issue 9 item 5):
//! `cluster_verify`, the `digest_match` of `cluster_status`, and the node-to-node operation
//! `verify_digests` that answers both.
//!
//! Digests (`store::digest`) are kept by the core with every write, so comparing whole tables
//! costs one small request per peer and database. Where two digests differ, the comparison
//! narrows down in two more round trips: the digests of 256 key buckets (by a hash of the
//! primary key), then the live keys with their versions of the buckets that differ.
//!
//! Owns those requests and the cache behind `digest_match`. Must never write anything, never
//! answer with more than [`MAX_KEYS`] keys per request, and never hold `cluster_status` on a
//! slow peer for more than [`STATUS_WAIT`].

use super::cluster_ops::{call_peer, retained_auth};
use super::ReplCtx;
use crate::core::auth::Principal;
use crate::core::catalog::TableDef;
use crate::core::error::{OpError, OpResult};
use crate::ops::fields::Fields;
use crate::store::digest::{self, KeyEntry};
use crate::store::keys;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Keys one answer lists at most (either side), and differing keys reported per table.
pub const MAX_KEYS: usize = 1_000;
/// How long a peer's table digests are reused by `cluster_status`.
const CACHE_FOR: Duration = Duration::from_secs(3);
/// How long `cluster_status` waits for digests it is refreshing.
pub const STATUS_WAIT: Duration = Duration::from_secs(1);
/// Round-trip bound of one digest request.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// The node-to-node operation.
pub const OP: &str = "verify_digests";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Tables of `db` that take part in comparisons: every table that replicates (a table with
/// `replicate: false` holds node-local data by design).
fn tables_of(ctx: &ReplCtx, db: &str) -> Option<BTreeMap<String, TableDef>> {
    let catalog = ctx.shared.catalog.load();
    let d = catalog.database(db)?;
    Some(
        d.tables
            .iter()
            .filter(|(_, t)| t.replicate)
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect(),
    )
}

/// This node's committed digest of every replicated table of `db` (None: no such database).
pub fn local_digests(ctx: &ReplCtx, db: &str) -> Result<Option<BTreeMap<String, u128>>, OpError> {
    let Some(tables) = tables_of(ctx, db) else {
        return Ok(None);
    };
    let mut out = BTreeMap::new();
    for (name, t) in tables {
        let stats = ctx
            .store
            .table_stats(t.id)
            .map_err(|e| OpError::internal(e.to_string()))?;
        out.insert(name, stats.digest.unwrap_or(0));
    }
    Ok(Some(out))
}

fn origin_names(ctx: &ReplCtx) -> Result<HashMap<u32, String>, OpError> {
    ctx.store
        .origin_names()
        .map_err(|e| OpError::internal(e.to_string()))
}

fn storage(e: crate::store::StoreError) -> OpError {
    OpError::internal(e.to_string())
}

/// Parses a bucket list: at most 256 numbers 0..=255.
fn parse_buckets(v: &[Value]) -> Result<[bool; 256], OpError> {
    let mut out = [false; 256];
    if v.len() > 256 {
        return Err(OpError::bad_request("'buckets' lists at most 256 buckets"));
    }
    for b in v {
        match b.as_u64() {
            Some(n) if n < 256 => out[n as usize] = true,
            _ => {
                return Err(OpError::bad_request(
                    "'buckets' must be numbers from 0 to 255",
                ))
            }
        }
    }
    Ok(out)
}

/// The peer side of every comparison (over the op socket, from a member or a super_user):
/// - `{database}`: `{"tables": {name: digest}}` (`"tables": null` without the database);
/// - `{database, table, level: "buckets"}`: `{"buckets": [256 digests]}`;
/// - `{database, table, buckets: [n...]}`: `{"keys": [[pk base64, version, origin,
///   hash]...], "truncated": bool}`, at most [`MAX_KEYS`] keys.
pub fn serve(ctx: &ReplCtx, body: &Map<String, Value>) -> OpResult {
    let f = Fields::new(body);
    let db = f.req_str(&["database", "schema"])?;
    let Some(table) = f.opt_str(&["table"])? else {
        return Ok(json!({ "tables": local_digests(ctx, &db)?.map(|m| {
            m.into_iter()
                .map(|(k, d)| (k, json!(digest::to_hex(d))))
                .collect::<Map<String, Value>>()
        }) }));
    };
    let t = tables_of(ctx, &db).and_then(|mut m| m.remove(&table));
    let names = origin_names(ctx)?;
    if let Some(list) = f.opt_array(&["buckets"])? {
        let buckets = parse_buckets(list)?;
        let (entries, truncated) = match &t {
            Some(t) => ctx
                .store
                .bucket_entries(t.id, &names, &buckets, MAX_KEYS)
                .map_err(storage)?,
            None => (Vec::new(), false),
        };
        let keys: Vec<Value> = entries
            .iter()
            .map(|e| json!([b64(&e.pk), e.version, e.origin, digest::to_hex(e.hash)]))
            .collect();
        return Ok(json!({ "keys": keys, "truncated": truncated }));
    }
    let buckets = match &t {
        Some(t) => ctx.store.bucket_digests(t.id, &names).map_err(storage)?,
        None => vec![0; 256],
    };
    Ok(json!({
        "buckets": buckets.iter().map(|d| digest::to_hex(*d)).collect::<Vec<_>>()
    }))
}

/// The URL a member is dialled at.
fn peer_url(ctx: &ReplCtx, peer: &str) -> Option<String> {
    ctx.members.load().urls.get(peer).cloned()
}

/// Sends one `verify_digests` request to `peer`.
fn ask(ctx: &ReplCtx, peer: &str, body: Value, timeout: Duration) -> Result<Value, String> {
    let url = peer_url(ctx, peer).ok_or_else(|| format!("{peer} is not a member"))?;
    let auth = retained_auth(ctx, peer);
    let (status, v) = call_peer(ctx, &url, auth.as_deref(), &body, timeout, true)?;
    if status != 200 {
        let msg = v.get("error").and_then(Value::as_str).unwrap_or("");
        return Err(format!("{peer} answered {status} {msg}"));
    }
    Ok(v)
}

/// A peer's digest of every replicated table of `db` (None: it has no such database).
fn peer_digests(
    ctx: &ReplCtx,
    peer: &str,
    db: &str,
    timeout: Duration,
) -> Result<Option<BTreeMap<String, u128>>, String> {
    let v = ask(ctx, peer, json!({"operation": OP, "database": db}), timeout)?;
    let Some(tables) = v.get("tables") else {
        return Err(format!("{peer} answered without 'tables'"));
    };
    let Some(tables) = tables.as_object() else {
        return Ok(None);
    };
    let mut out = BTreeMap::new();
    for (name, d) in tables {
        let d = d
            .as_str()
            .and_then(digest::from_hex)
            .ok_or_else(|| format!("{peer} sent an unreadable digest for {db}.{name}"))?;
        out.insert(name.clone(), d);
    }
    Ok(Some(out))
}

/// Whether two digest maps agree: a table missing on one side counts as empty.
fn digests_equal(a: &BTreeMap<String, u128>, b: &BTreeMap<String, u128>) -> bool {
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .all(|n| a.get(n).copied().unwrap_or(0) == b.get(n).copied().unwrap_or(0))
}

/// Peers' digests for `cluster_status`, fetched in the background and reused for
/// [`CACHE_FOR`].
#[derive(Default)]
pub struct DigestCache {
    state: Mutex<CacheState>,
    changed: Condvar,
}

/// A peer's answer: None when it did not answer; Some(None) when it has no such database.
type PeerAnswer = Option<Option<BTreeMap<String, u128>>>;

#[derive(Default)]
struct CacheState {
    /// (peer, database) → when fetched, and the answer.
    entries: HashMap<(String, String), (Instant, PeerAnswer)>,
    in_flight: BTreeSet<(String, String)>,
}

/// `digest_match` of every (peer, database) pair: true or false when this node's digests
/// and the peer's (fetched at most [`CACHE_FOR`] ago) are known, null otherwise. Waits at
/// most [`STATUS_WAIT`] for refreshes it starts.
pub fn status_matches(
    ctx: &Arc<ReplCtx>,
    pairs: &[(String, String)],
) -> HashMap<(String, String), Value> {
    let cache = &ctx.digests;
    let now = Instant::now();
    {
        let mut st = cache.state.lock().unwrap_or_else(|p| p.into_inner());
        for pair in pairs {
            let fresh = st
                .entries
                .get(pair)
                .is_some_and(|(at, _)| now.duration_since(*at) < CACHE_FOR);
            if fresh || st.in_flight.contains(pair) {
                continue;
            }
            st.in_flight.insert(pair.clone());
            let ctx = ctx.clone();
            let pair = pair.clone();
            let spawned = std::thread::Builder::new()
                .name("repl-digests".into())
                .spawn({
                    let pair = pair.clone();
                    move || {
                        let got = peer_digests(&ctx, &pair.0, &pair.1, PEER_TIMEOUT)
                            .map_err(|e| log::debug!("digests of {}: {e}", pair.0))
                            .ok();
                        let mut st = ctx.digests.state.lock().unwrap_or_else(|p| p.into_inner());
                        st.in_flight.remove(&pair);
                        st.entries.insert(pair, (Instant::now(), got));
                        ctx.digests.changed.notify_all();
                    }
                });
            if spawned.is_err() {
                st.in_flight.remove(&pair);
            }
        }
        let deadline = now + STATUS_WAIT;
        while pairs.iter().any(|p| st.in_flight.contains(p)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = cache
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let mut out = HashMap::new();
        for pair in pairs {
            let v = match st.entries.get(pair).and_then(|(_, v)| v.as_ref()) {
                // A database missing on one side compares as one without records.
                Some(peer) => match local_digests(ctx, &pair.1) {
                    Ok(local) => json!(digests_equal(
                        &local.unwrap_or_default(),
                        &peer.clone().unwrap_or_default()
                    )),
                    Err(_) => Value::Null,
                },
                None => Value::Null,
            };
            out.insert(pair.clone(), v);
        }
        out
    }
}

/// One live record on one side of a comparison.
fn side(e: Option<&KeyEntry>) -> Value {
    e.map_or(Value::Null, |e| {
        json!({"version": e.version, "updated": crate::core::hlc::to_ms_f64(e.version), "origin": e.origin})
    })
}

/// Compares one table with one peer whose digest differs: the keys whose live record differs
/// (or exists on one side only), at most [`MAX_KEYS`].
fn differing_keys(
    ctx: &ReplCtx,
    peer: &str,
    db: &str,
    table: &str,
    local: Option<&TableDef>,
) -> Result<(Vec<Value>, bool), String> {
    let names = ctx.store.origin_names().map_err(|e| e.to_string())?;
    let mine = match local {
        Some(t) => ctx
            .store
            .bucket_digests(t.id, &names)
            .map_err(|e| e.to_string())?,
        None => vec![0; 256],
    };
    let theirs = ask(
        ctx,
        peer,
        json!({"operation": OP, "database": db, "table": table, "level": "buckets"}),
        PEER_TIMEOUT,
    )?;
    let theirs: Vec<u128> = theirs
        .get("buckets")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().and_then(digest::from_hex))
                .collect()
        })
        .unwrap_or_default();
    if theirs.len() != 256 {
        return Err(format!("{peer} sent unreadable bucket digests"));
    }
    let differing: Vec<usize> = (0..256).filter(|&i| mine[i] != theirs[i]).collect();
    if differing.is_empty() {
        // The table digests differed but no bucket does: a write landed between the requests.
        return Ok((Vec::new(), false));
    }
    let mut wanted = [false; 256];
    for &i in &differing {
        wanted[i] = true;
    }
    let (mine, mine_cut) = match local {
        Some(t) => ctx
            .store
            .bucket_entries(t.id, &names, &wanted, MAX_KEYS)
            .map_err(|e| e.to_string())?,
        None => (Vec::new(), false),
    };
    let answer = ask(
        ctx,
        peer,
        json!({"operation": OP, "database": db, "table": table, "buckets": differing}),
        PEER_TIMEOUT,
    )?;
    let theirs_cut = answer
        .get("truncated")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut theirs: BTreeMap<Vec<u8>, KeyEntry> = BTreeMap::new();
    for k in answer
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(MAX_KEYS)
    {
        let parsed = (|| {
            let a = k.as_array()?;
            Some(KeyEntry {
                pk: unb64(a.first()?.as_str()?)?,
                version: a.get(1)?.as_u64()?,
                origin: a.get(2)?.as_str()?.to_string(),
                hash: digest::from_hex(a.get(3)?.as_str()?)?,
            })
        })();
        let Some(e) = parsed else {
            return Err(format!("{peer} sent an unreadable key entry"));
        };
        theirs.insert(e.pk.clone(), e);
    }
    let mine: BTreeMap<Vec<u8>, KeyEntry> = mine.into_iter().map(|e| (e.pk.clone(), e)).collect();
    // Where one side's list was cut, keys past its last listed key are unknown on that side.
    let horizon = |cut: bool, m: &BTreeMap<Vec<u8>, KeyEntry>| {
        if cut {
            m.keys().next_back().cloned()
        } else {
            None
        }
    };
    let (mine_last, theirs_last) = (horizon(mine_cut, &mine), horizon(theirs_cut, &theirs));
    let all: BTreeSet<&Vec<u8>> = mine.keys().chain(theirs.keys()).collect();
    let mut out = Vec::new();
    let mut truncated = mine_cut || theirs_cut;
    for pk in all {
        if mine_last.as_ref().is_some_and(|l| pk > l)
            || theirs_last.as_ref().is_some_and(|l| pk > l)
        {
            continue;
        }
        let (a, b) = (mine.get(pk), theirs.get(pk));
        if a.map(|e| e.hash) == b.map(|e| e.hash) {
            continue;
        }
        if out.len() == MAX_KEYS {
            truncated = true;
            break;
        }
        out.push(json!({
            "id": keys::decode_pk(pk).unwrap_or(Value::Null),
            "local": side(a),
            "peer": side(b),
        }));
    }
    Ok((out, truncated))
}

/// `cluster_verify` (super_user): every replicated table of every database (or `database`,
/// or one `table`) compared with every member; where digests differ, the differing keys.
pub fn cluster_verify(ctx: &Arc<ReplCtx>, body: &Map<String, Value>, _p: &Principal) -> OpResult {
    let f = Fields::new(body);
    let table_filter = f.opt_str(&["table"])?;
    let database = match f.opt_str(&["database", "schema"])? {
        Some(d) => Some(d),
        // Harper's default database for table operations.
        None if table_filter.is_some() => Some("data".to_string()),
        None => None,
    };
    let catalog = ctx.shared.catalog.load();
    let dbs: Vec<String> = match &database {
        Some(d) => {
            if catalog.database(d).is_none() {
                return Err(OpError::database_not_found(d));
            }
            if let Some(t) = &table_filter {
                if catalog.table(d, t).is_none() {
                    return Err(OpError::table_not_found(d, t));
                }
            }
            vec![d.clone()]
        }
        None => catalog
            .databases
            .keys()
            .filter(|d| ctx.cfg.replicates_db(d))
            .cloned()
            .collect(),
    };
    drop(catalog);
    let members = ctx.members.load();
    let mut all_match = true;
    let mut peers = Vec::new();
    let names: Vec<&String> = if members.removed {
        Vec::new()
    } else {
        members
            .names
            .iter()
            .filter(|n| **n != ctx.node_name)
            .collect()
    };
    for peer in names {
        let mut tables = Vec::new();
        let mut error = None;
        for db in &dbs {
            let Some(mine) = local_digests(ctx, db)? else {
                continue;
            };
            let theirs = match peer_digests(ctx, peer, db, PEER_TIMEOUT) {
                Ok(t) => t.unwrap_or_default(),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            };
            let local_defs = tables_of(ctx, db).unwrap_or_default();
            let table_names: BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
            for name in table_names {
                if table_filter.as_ref().is_some_and(|t| t != name) {
                    continue;
                }
                let (a, b) = (mine.get(name), theirs.get(name));
                let matches = a.copied().unwrap_or(0) == b.copied().unwrap_or(0);
                let mut o = json!({
                    "database": db,
                    "table": name,
                    "match": matches,
                    "local_digest": a.map(|d| digest::to_hex(*d)),
                    "peer_digest": b.map(|d| digest::to_hex(*d)),
                    "differing_keys": [],
                    "truncated": false,
                });
                if !matches {
                    all_match = false;
                    match differing_keys(ctx, peer, db, name, local_defs.get(name)) {
                        Ok((keys, truncated)) => {
                            o["differing_keys"] = Value::Array(keys);
                            o["truncated"] = json!(truncated);
                        }
                        Err(e) => o["error"] = json!(e),
                    }
                }
                tables.push(o);
            }
        }
        let mut p = json!({ "name": peer, "tables": tables });
        if let Some(e) = error {
            all_match = false;
            p["error"] = json!(e);
        }
        peers.push(p);
    }
    Ok(json!({
        "node": ctx.node_name,
        "match": all_match,
        "peers": peers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_missing_on_one_side_matches_only_when_empty() {
        let a: BTreeMap<String, u128> = [("dog".to_string(), 0)].into_iter().collect();
        let b = BTreeMap::new();
        assert!(digests_equal(&a, &b));
        let c: BTreeMap<String, u128> = [("dog".to_string(), 5)].into_iter().collect();
        assert!(!digests_equal(&c, &b));
        assert!(digests_equal(&c, &c.clone()));
    }

    #[test]
    fn bucket_lists_are_bounded_and_checked() {
        assert!(parse_buckets(&[json!(0), json!(255)]).is_ok());
        assert!(parse_buckets(&[json!(256)]).is_err());
        assert!(parse_buckets(&[json!("1")]).is_err());
        assert!(parse_buckets(&vec![json!(1); 257]).is_err());
    }
}
