//! Background jobs, Harper's way: bulk loads (`csv_data_load`, `csv_file_load`,
//! `csv_url_load`), `export_local`, `delete_records_before` and `delete_audit_logs_before`
//! answer at once with a job id and run on a thread of their own; `get_job` and
//! `search_jobs_by_start_date` read the job records.
//!
//! Owns the job records in `system.hdb_job` (node-local: the table does not replicate) and the
//! job threads (at most [`MAX_RUNNING`] run at once, at most [`MAX_ACCEPTED`] are accepted and
//! unfinished). Every job record and every change a job makes goes through the core
//! (`CoreHandle::execute`), in bounded batches; jobs read the store directly, like the HTTP
//! workers. Must never write to the store itself, hold a whole input in memory, or leave a job
//! IN_PROGRESS forever: a job still IN_PROGRESS when the node starts was cut short by a stop or
//! a crash, and is marked ERROR then.

pub mod cleanup;
pub mod csv_load;
pub mod export;

use crate::core::auth::{AuthState, Principal};
use crate::core::catalog::{Catalog, HDB_JOB, SYSTEM_DB};
use crate::core::error::{OpError, OpResult};
use crate::core::op::WriteOp;
use crate::core::txn::Actor;
use crate::node::driver::{CoreHandle, Shared};
use crate::store::keys;
use crate::store::record::StoredRecord;
use crate::store::Store;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Jobs running at once (the machine this targets has two cores; a load keeps the core thread
/// busy, so more would only queue there).
pub const MAX_RUNNING: usize = 2;
/// Jobs accepted and not yet finished (running or waiting for a slot): each waiting job holds
/// a thread and, for `csv_data_load`, its request's data.
pub const MAX_ACCEPTED: usize = 64;

pub const IN_PROGRESS: &str = "IN_PROGRESS";
pub const COMPLETE: &str = "COMPLETE";
pub const ERROR: &str = "ERROR";

/// The message of a job found IN_PROGRESS when the node starts.
pub const INTERRUPTED: &str =
    "Job interrupted: the node stopped or restarted before the job finished";

/// What a finished job reports: its `message`, and for some (export_local) a `result`.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub message: String,
    pub result: Option<Value>,
}

impl Outcome {
    pub fn message(message: impl Into<String>) -> Self {
        Outcome {
            message: message.into(),
            result: None,
        }
    }
}

/// The work of one job: runs on the job's thread; `Err` is the job's ERROR message.
pub type Work = Box<dyn FnOnce(&JobCtx) -> Result<Outcome, String> + Send>;

#[derive(Default)]
struct Slots {
    running: usize,
    accepted: usize,
}

struct Inner {
    store: Store,
    core: CoreHandle,
    shared: Arc<Shared>,
    slots: Mutex<Slots>,
    freed: Condvar,
    stopping: AtomicBool,
}

/// The node's job runner (one per node; cheap to clone).
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

/// What a job's work sees: the node's store and core, who started the job, and whether the
/// node is stopping (checked between batches).
pub struct JobCtx<'a> {
    inner: &'a Inner,
    pub id: String,
    pub principal: Principal,
}

impl JobCtx<'_> {
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn core(&self) -> &CoreHandle {
        &self.inner.core
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.inner.shared.catalog.load()
    }

    pub fn auth(&self) -> Arc<AuthState> {
        self.inner.shared.auth.load()
    }

    /// The actor the job's writes are recorded under (its user, in the audit log).
    pub fn actor(&self) -> Actor {
        Actor::User(self.principal.username.clone())
    }

    /// The node is stopping: a job ends at its next batch boundary (what it committed stays).
    pub fn stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// Err with the stop message when the node is stopping.
    pub fn check_stop(&self) -> Result<(), String> {
        if self.stopping() {
            Err("Job interrupted: the node is stopping".into())
        } else {
            Ok(())
        }
    }
}

/// Holds a running slot; frees it (and wakes a waiting job) when dropped.
struct Running<'a>(&'a Inner);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut s = self.0.slots.lock().unwrap_or_else(|p| p.into_inner());
        s.running = s.running.saturating_sub(1);
        s.accepted = s.accepted.saturating_sub(1);
        self.0.freed.notify_all();
    }
}

fn job_table_id(catalog: &Catalog) -> Option<u32> {
    catalog.table(SYSTEM_DB, HDB_JOB).map(|t| t.id)
}

/// A stored job record, without the system timestamps.
fn parse_job(raw: &[u8]) -> Option<Map<String, Value>> {
    let json = StoredRecord::json_slice(raw)?;
    match serde_json::from_slice(json) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// The keys of `rec` in `order`, those it has.
fn ordered(rec: &Map<String, Value>, order: &[&str]) -> Value {
    let mut out = Map::new();
    for k in order {
        if let Some(v) = rec.get(*k) {
            out.insert((*k).to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// `get_job`'s view of a record, in Harper's key order (it differs while running).
pub fn job_view(rec: &Map<String, Value>) -> Value {
    if rec.get("status").and_then(Value::as_str) == Some(IN_PROGRESS) {
        ordered(
            rec,
            &[
                "id",
                "type",
                "start_datetime",
                "created_datetime",
                "status",
                "user",
            ],
        )
    } else {
        ordered(
            rec,
            &[
                "id",
                "result",
                "status",
                "message",
                "end_datetime",
                "type",
                "start_datetime",
                "created_datetime",
                "user",
            ],
        )
    }
}

/// `search_jobs_by_start_date`'s view: Harper's key order plus the two ISO dates.
pub fn search_view(rec: &Map<String, Value>) -> Value {
    let mut v = ordered(
        rec,
        &[
            "id",
            "created_datetime",
            "end_datetime",
            "message",
            "result",
            "start_datetime",
            "status",
            "type",
            "user",
        ],
    );
    if let Value::Object(o) = &mut v {
        for (from, to) in [
            ("start_datetime", "start_datetime_converted"),
            ("end_datetime", "end_datetime_converted"),
        ] {
            if let Some(ms) = rec.get(from).and_then(Value::as_u64) {
                o.insert(to.into(), json!(crate::util::time::iso8601(ms)));
            }
        }
    }
    v
}

impl Jobs {
    pub fn new(store: Store, core: CoreHandle, shared: Arc<Shared>) -> Jobs {
        Jobs {
            inner: Arc::new(Inner {
                store,
                core,
                shared,
                slots: Mutex::new(Slots::default()),
                freed: Condvar::new(),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    fn put_record(&self, rec: Map<String, Value>, user: &str) -> OpResult {
        self.inner.core.execute(
            WriteOp::SystemPut {
                table: HDB_JOB.into(),
                record: rec,
            },
            Actor::User(user.to_string()),
        )
    }

    /// Records a new job (IN_PROGRESS) for `principal`, starts `work` on a thread of its own
    /// and answers Harper's `Starting job with id <id>`.
    pub fn start(&self, job_type: &str, principal: Principal, work: Work) -> OpResult {
        {
            let mut s = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
            if self.inner.stopping.load(Ordering::SeqCst) {
                return Err(OpError::unavailable("the node is shutting down"));
            }
            if s.accepted >= MAX_ACCEPTED {
                return Err(OpError::unavailable(format!(
                    "{MAX_ACCEPTED} jobs are already running or waiting to run; try again when some have finished"
                )));
            }
            s.accepted += 1;
        }
        let id = crate::util::uuid_v4();
        let now = crate::util::time::now_ms();
        let mut rec = Map::new();
        rec.insert("id".into(), json!(id));
        rec.insert("type".into(), json!(job_type));
        rec.insert("status".into(), json!(IN_PROGRESS));
        rec.insert("user".into(), json!(principal.username));
        rec.insert("created_datetime".into(), json!(now));
        rec.insert("start_datetime".into(), json!(now));
        if let Err(e) = self.put_record(rec.clone(), &principal.username) {
            self.release_unstarted();
            return Err(e);
        }
        let jobs = self.clone();
        let thread_id = id.clone();
        let spawned = std::thread::Builder::new()
            .name("job".into())
            .spawn(move || jobs.run(thread_id, principal, rec, work));
        if let Err(e) = spawned {
            // The record says IN_PROGRESS; the next start marks it interrupted. Say so now.
            self.release_unstarted();
            log::error!("cannot start a thread for job {id}: {e}");
            return Err(OpError::unavailable(format!("cannot start the job: {e}")));
        }
        Ok(json!({
            "message": format!("Starting job with id {id}"),
            "job_id": id,
        }))
    }

    fn release_unstarted(&self) {
        let mut s = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        s.accepted = s.accepted.saturating_sub(1);
        self.inner.freed.notify_all();
    }

    /// The job thread: waits for a running slot, runs the work (a panic is an ERROR, not a dead
    /// node), records the outcome.
    fn run(&self, id: String, principal: Principal, mut rec: Map<String, Value>, work: Work) {
        let inner = &*self.inner;
        {
            let mut s = inner.slots.lock().unwrap_or_else(|p| p.into_inner());
            while s.running >= MAX_RUNNING && !inner.stopping.load(Ordering::SeqCst) {
                s = inner.freed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            s.running += 1;
        }
        let _slot = Running(inner);
        let user = principal.username.clone();
        let ctx = JobCtx {
            inner,
            id: id.clone(),
            principal,
        };
        let started = Instant::now();
        let outcome = if ctx.stopping() {
            Err("Job interrupted: the node is stopping".to_string())
        } else {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&ctx)))
                .unwrap_or_else(|_| Err("the job failed unexpectedly (see the node's log)".into()))
        };
        let (status, message, result) = match outcome {
            Ok(o) => (COMPLETE, o.message, o.result),
            Err(m) => (ERROR, m, None),
        };
        log::info!(
            "job {id} ({}) by {user}: {status} in {:.1} s: {message}",
            rec.get("type").and_then(Value::as_str).unwrap_or("?"),
            started.elapsed().as_secs_f64()
        );
        if let Some(r) = result {
            rec.insert("result".into(), r);
        }
        rec.insert("status".into(), json!(status));
        rec.insert("message".into(), json!(message));
        rec.insert("end_datetime".into(), json!(crate::util::time::now_ms()));
        if let Err(e) = self.put_record(rec, &user) {
            // The node is stopping: the next start marks the job interrupted.
            log::warn!("cannot record the end of job {id}: {e}");
        }
    }

    /// Marks every job left IN_PROGRESS by an earlier process as ERROR (start-up, before any
    /// new job can start). Returns how many.
    pub fn recover_interrupted(&self) -> Result<usize, String> {
        let catalog = self.inner.shared.catalog.load();
        let Some(table) = job_table_id(&catalog) else {
            return Ok(0);
        };
        let mut stale = Vec::new();
        for item in self
            .inner
            .store
            .scan_table(table, None)
            .map_err(|e| e.to_string())?
        {
            let (_, raw) = item.map_err(|e| e.to_string())?;
            if let Some(rec) = parse_job(&raw) {
                if rec.get("status").and_then(Value::as_str) == Some(IN_PROGRESS) {
                    stale.push(rec);
                }
            }
        }
        let n = stale.len();
        for mut rec in stale {
            let user = rec
                .get("user")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            rec.remove(crate::core::catalog::CREATED_TIME);
            rec.remove(crate::core::catalog::UPDATED_TIME);
            rec.insert("status".into(), json!(ERROR));
            rec.insert("message".into(), json!(INTERRUPTED));
            rec.insert("end_datetime".into(), json!(crate::util::time::now_ms()));
            self.put_record(rec, &user).map_err(|e| e.to_string())?;
        }
        if n > 0 {
            log::warn!("{n} job(s) were cut short by the last stop or crash; marked ERROR");
        }
        Ok(n)
    }

    /// Stops accepting jobs and waits (at most `wait`) for running ones to reach a batch
    /// boundary and record how far they got; the rest are marked interrupted at the next start.
    pub fn stop(&self, wait: Duration) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + wait;
        let mut s = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.freed.notify_all();
        while s.accepted > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!(
                    "{} job(s) still running at shutdown; they will show as interrupted",
                    s.accepted
                );
                break;
            }
            s = self
                .inner
                .freed
                .wait_timeout(s, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// One job record by id (`get_job`): `[record]`, or `[]` when there is none (or, for a user
    /// who is not a super_user, when another user started it).
    pub fn get(&self, id: &str, p: &Principal) -> OpResult {
        let catalog = self.inner.shared.catalog.load();
        let Some(table) = job_table_id(&catalog) else {
            return Ok(json!([]));
        };
        let Some(pk) = keys::encode_pk(&json!(id)) else {
            return Ok(json!([]));
        };
        let raw = self
            .inner
            .store
            .get_raw(table, &pk)
            .map_err(|e| OpError::internal(e.to_string()))?;
        let rec = raw.as_deref().and_then(parse_job);
        Ok(match rec {
            Some(r)
                if p.is_super_user()
                    || r.get("user").and_then(Value::as_str) == Some(p.username.as_str()) =>
            {
                json!([job_view(&r)])
            }
            _ => json!([]),
        })
    }

    /// Jobs whose `start_datetime` is within `[from, to]` (epoch ms), oldest first.
    pub fn search_by_start(&self, from: u64, to: u64) -> OpResult {
        let catalog = self.inner.shared.catalog.load();
        let Some(table) = job_table_id(&catalog) else {
            return Ok(json!([]));
        };
        let err = |e: crate::store::StoreError| OpError::internal(e.to_string());
        let mut found = Vec::new();
        for item in self.inner.store.scan_table(table, None).map_err(err)? {
            let (_, raw) = item.map_err(err)?;
            let Some(rec) = parse_job(&raw) else {
                continue;
            };
            let start = rec
                .get("start_datetime")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if (from..=to).contains(&start) {
                found.push((start, search_view(&rec)));
            }
        }
        found.sort_by_key(|a| a.0);
        Ok(Value::Array(found.into_iter().map(|(_, v)| v).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn views_use_harpers_key_orders() {
        let running = rec(
            json!({"id":"a","type":"csv_data_load","status":"IN_PROGRESS","user":"admin","created_datetime":1,"start_datetime":2,"__createdtime__":3.0}),
        );
        let keys: Vec<String> = job_view(&running)
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "id",
                "type",
                "start_datetime",
                "created_datetime",
                "status",
                "user"
            ]
        );
        let done = rec(
            json!({"id":"a","type":"export_local","status":"COMPLETE","user":"admin","created_datetime":1,"start_datetime":2,"message":"m","end_datetime":1796298114254u64,"result":{"message":"x","path":"/p"}}),
        );
        let keys: Vec<String> = job_view(&done)
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "id",
                "result",
                "status",
                "message",
                "end_datetime",
                "type",
                "start_datetime",
                "created_datetime",
                "user"
            ]
        );
        let s = search_view(&done);
        assert_eq!(s["end_datetime_converted"], "2026-12-03T11:41:54.254Z");
        let keys: Vec<String> = s.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys.last().map(String::as_str),
            Some("end_datetime_converted")
        );
    }
}
