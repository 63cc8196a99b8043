//! The core thread's driver: the I/O half of the state machine.
//!
//! Blocks for the next input, then drains whatever else is queued (group commit), steps the
//! core for each, commits the group's writes as ONE fjall batch with ONE sync, publishes the new
//! catalog/users, and only then answers: every acknowledged write is durable (unless
//! `storage.writeAsync` relaxes it to a process-crash-safe OS write). A storage error stops the
//! node loudly: after a failed write the only safe state is the one recovered on restart.

use crate::core::auth::AuthState;
use crate::core::catalog::Catalog;
use crate::core::error::{OpError, OpResult};
use crate::core::op::WriteOp;
use crate::core::txn::Actor;
use crate::core::{Core, Input, Reply};
use crate::store::{Durability, Store};
use crate::util::oneshot;
use crate::util::Published;
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where the answer to a core input goes.
pub enum ReplyTo {
    /// A waiting connection thread: a [`oneshot`] so the thread sleeps at once instead of
    /// spinning while the group commit syncs.
    Op(oneshot::Sender<OpResult>),
    Applied(Sender<Vec<(String, u64)>>),
    /// A write of a [`Chain`]: refused unapplied when an earlier link failed; its own failure
    /// breaks the chain.
    Chained {
        tx: oneshot::Sender<OpResult>,
        broken: Arc<AtomicBool>,
    },
    /// Nobody waits (node-internal writes whose outcome is logged).
    None,
}

pub type CoreMsg = Input<ReplyTo>;

/// Writes queued one after another by one thread (the batches of a bulk load) that must stop
/// at the first failure: the core thread refuses the links queued after a failed one.
#[derive(Default)]
pub struct Chain(Arc<AtomicBool>);

impl Chain {
    /// The answer a link gets when an earlier link failed.
    pub const BROKEN: &'static str = "not applied: an earlier write of the same load failed";
}

/// What a commit changed, for the replication layer.
pub struct CommitInfo<'a> {
    /// Databases whose audit logs grew (their senders wake up).
    pub dbs: &'a std::collections::BTreeSet<String>,
    pub membership_changed: bool,
    pub catalog_changed: bool,
}

/// Told after each commit what it changed.
pub type CommitHook = Box<dyn FnMut(&CommitInfo) + Send>;

/// What the core publishes for readers after each commit.
pub struct Shared {
    pub catalog: Published<Catalog>,
    pub auth: Published<AuthState>,
    /// Wall-clock ms of the core loop's last turn (it turns at least every second): `/health`
    /// answers 503 when it is stale, so a wedged or dead core is visible.
    pub core_alive_ms: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn new(catalog: Arc<Catalog>, auth: Arc<AuthState>) -> Shared {
        Shared {
            catalog: Published::new(catalog),
            auth: Published::new(auth),
            core_alive_ms: std::sync::atomic::AtomicU64::new(crate::util::time::now_ms()),
        }
    }

    /// Whether the core thread turned within `max_ms`.
    pub fn core_alive(&self, max_ms: u64) -> bool {
        let last = self
            .core_alive_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        crate::util::time::now_ms().saturating_sub(last) <= max_ms
    }
}

/// A sender of operations to the core thread. When every handle is dropped the core thread
/// finishes what is queued and stops.
#[derive(Clone)]
pub struct CoreHandle {
    tx: Sender<CoreMsg>,
}

impl CoreHandle {
    pub fn new(tx: Sender<CoreMsg>) -> Self {
        CoreHandle { tx }
    }

    /// Runs a write operation made by `actor` on the core thread and waits until it is
    /// committed.
    pub fn execute(&self, op: WriteOp, actor: Actor) -> OpResult {
        let (tx, rx) = oneshot::channel();
        let msg = Input::Write {
            op,
            actor,
            reply: ReplyTo::Op(tx),
        };
        if self.tx.send(msg).is_err() {
            return Err(OpError::unavailable("the node is shutting down"));
        }
        rx.recv()
            .unwrap_or_else(|_| Err(OpError::unavailable("the node is shutting down")))
    }

    /// Queues a write made by `actor` as the next link of `chain`, without waiting: the
    /// committed answer arrives on the returned channel. Writes queued by one thread are
    /// stepped in the order queued (one channel, one core thread), so a bulk load can keep a
    /// few batches in flight; once a link fails, the links queued after it are refused
    /// unapplied ([`Chain`]), so nothing after a failed batch is written, as when loading
    /// one batch at a time.
    pub fn submit(&self, op: WriteOp, actor: Actor, chain: &Chain) -> oneshot::Receiver<OpResult> {
        let (tx, rx) = oneshot::channel();
        let msg = Input::Write {
            op,
            actor,
            reply: ReplyTo::Chained {
                tx,
                broken: chain.0.clone(),
            },
        };
        // If the core is gone the message (and its sender) is dropped: `recv` on `rx` fails,
        // which the caller reads as "the node is shutting down".
        let _ = self.tx.send(msg);
        rx
    }

    /// Sends an input without waiting for the answer.
    pub fn send(&self, msg: CoreMsg) -> bool {
        self.tx.send(msg).is_ok()
    }
}

pub struct Driver {
    pub core: Core<ReplyTo>,
    pub store: Store,
    pub rx: Receiver<CoreMsg>,
    /// Closed (or sent to) when the node stops: drain what is queued, flush, return, even if
    /// some thread still holds a sender.
    pub stop: Receiver<()>,
    pub durability: Durability,
    pub max_group: usize,
    pub shared: Arc<Shared>,
    /// Called after each commit with the databases whose logs grew (replication senders wake).
    pub on_commit: CommitHook,
}

impl Driver {
    /// Steps one input; a storage read error is fatal.
    fn step(&mut self, msg: CoreMsg, now: u64) {
        if let (
            Some(t),
            Input::Write {
                op: WriteOp::Records { table, .. },
                ..
            },
        ) = (test_panic_table(), &msg)
        {
            if t == table {
                panic!("SKERRY_TEST_CORE_PANIC_TABLE: a write to '{t}'");
            }
        }
        // A link of a broken chain is answered here, never stepped; a link that fails breaks
        // its chain before the next input is stepped (its answer waits for the flush).
        let chain = match &msg {
            Input::Write {
                reply: ReplyTo::Chained { broken, .. },
                ..
            } => Some(broken.clone()),
            _ => None,
        };
        if chain.as_ref().is_some_and(|b| b.load(Ordering::Acquire)) {
            if let Input::Write {
                reply: ReplyTo::Chained { tx, .. },
                ..
            } = msg
            {
                let _ = tx.send(Err(OpError::bad_request(Chain::BROKEN)));
            }
            return;
        }
        if let Err(e) = self.core.step(msg, now, &self.store) {
            fatal(&e.to_string());
        }
        if let Some(broken) = chain {
            if self.core.last_reply_failed() {
                broken.store(true, Ordering::Release);
            }
        }
    }

    /// Commits what the core produced and answers. Public so start-up can run the bootstrap
    /// writes synchronously before any thread exists.
    pub fn flush(&mut self) -> bool {
        let ready = self.core.take_ready();
        let wrote = !ready.writes.is_empty();
        if wrote {
            if let Err(e) = self.store.commit(&ready.writes, self.durability) {
                // The waiting requests get a clear answer instead of a dropped connection
                // (whether the failed batch reached the journal is decided on restart: a
                // torn batch is discarded whole), then the node stops.
                let msg = format!("the node is stopping: {e}; this write may not have been stored");
                for (to, _) in ready.replies {
                    match to {
                        ReplyTo::Op(tx) | ReplyTo::Chained { tx, .. } => {
                            let _ = tx.send(Err(OpError::internal(msg.clone())));
                        }
                        ReplyTo::Applied(_) | ReplyTo::None => {}
                    }
                }
                // Bounded: lets the connection threads write those answers.
                std::thread::sleep(std::time::Duration::from_millis(300));
                fatal(&e.to_string());
            }
        }
        let catalog_changed = ready.catalog.is_some();
        if let Some(c) = ready.catalog {
            self.shared.catalog.store(c);
        }
        if let Some(a) = ready.auth {
            self.shared.auth.store(a);
        }
        for (to, reply) in ready.replies {
            match (to, reply) {
                (ReplyTo::Op(tx) | ReplyTo::Chained { tx, .. }, Reply::Op(r)) => {
                    let _ = tx.send(r);
                }
                (ReplyTo::Applied(tx), Reply::Applied(v)) => {
                    let _ = tx.send(v);
                }
                (ReplyTo::None, Reply::Op(Err(e))) => log::warn!("internal write failed: {e}"),
                _ => {}
            }
        }
        if !ready.committed_dbs.is_empty() || ready.membership_changed || catalog_changed {
            (self.on_commit)(&CommitInfo {
                dbs: &ready.committed_dbs,
                membership_changed: ready.membership_changed,
                catalog_changed,
            });
        }
        wrote
    }

    /// Runs one input to completion (start-up use).
    pub fn run_one(&mut self, msg: CoreMsg) {
        self.step(msg, crate::util::time::now_ms());
        let _ = self.flush();
    }

    /// The core thread's loop; returns when told to stop (or every sender is gone) and the
    /// queue is drained.
    pub fn run(mut self) {
        // Timers (audit retention) advance on a one-second tick.
        let tick = crossbeam_channel::tick(std::time::Duration::from_secs(1));
        loop {
            let first = crossbeam_channel::select! {
                recv(tick) -> _ => Input::Tick,
                recv(self.rx) -> m => match m {
                    Ok(m) => m,
                    Err(_) => break,
                },
                recv(self.stop) -> _ => match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            let now = crate::util::time::now_ms();
            self.shared
                .core_alive_ms
                .store(now, std::sync::atomic::Ordering::Relaxed);
            let started = std::time::Instant::now();
            self.step(first, now);
            let mut n = 1;
            while n < self.max_group {
                match self.rx.try_recv() {
                    Ok(msg) => {
                        self.step(msg, now);
                        n += 1;
                    }
                    Err(_) => break,
                }
            }
            if self.flush() {
                crate::obs::metrics().commit(n, started.elapsed().as_secs_f64());
            }
        }
        if let Err(e) = self.store.persist() {
            fatal(&e.to_string());
        }
        if let Err(e) = self.store.flush_memtables() {
            // The data is already durable in the journal; the next start replays it.
            log::warn!("could not flush memtables at shutdown: {e}");
        }
        log::info!("core stopped; store flushed");
    }
}

/// `SKERRY_TEST_CORE_PANIC_TABLE`: the core thread panics on a write to this table (tests of
/// what a core panic does to the node; unset in production).
fn test_panic_table() -> Option<&'static str> {
    static T: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    T.get_or_init(|| std::env::var("SKERRY_TEST_CORE_PANIC_TABLE").ok())
        .as_deref()
}

/// Stops the process after an unrecoverable storage error.
pub fn fatal(msg: &str) -> ! {
    log::error!("FATAL storage error, stopping the node to protect the data: {msg}");
    eprintln!("skerry: FATAL storage error, stopping: {msg}");
    std::process::exit(74);
}
