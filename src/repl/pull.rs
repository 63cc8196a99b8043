//! The receiving side of a link: one thread per (peer, database) that dials the peer,
//! subscribes with this node's cursors, hands every received batch to the core thread, and
//! acknowledges what was committed. Reconnects with backoff (0.5 s doubling to 30 s, reset after
//! a session that received data).

use super::conn::{Conn, Incoming};
use super::stats::{next_thread_id, LinkStats};
use super::topology::Member;
use super::wire::Frame;
use super::{LiveThread, MgrEvent, ReplCtx};
use crate::core::txn::Txn;
use crate::core::Input;
use crate::node::driver::ReplyTo;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Instructions from the manager.
#[derive(Debug)]
pub enum PullCtl {
    /// Carry these origins from now on (the peer's own plus relayed ones).
    SetOrigins(Vec<String>),
    Stop,
}

enum Outcome {
    Stop,
    Ended { reason: String, progress: bool },
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub fn spawn(
    ctx: Arc<ReplCtx>,
    member: Member,
    db: String,
    origins: Vec<String>,
    ctl: Receiver<PullCtl>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("repl-pull-{}-{db}", member.name))
        .spawn(move || worker(ctx, member, db, origins, ctl))
}

/// The current cursors of `db` for `origins` (committed state, read from the store).
fn cursors(ctx: &ReplCtx, db: &str, origins: &[String]) -> Vec<(String, u64)> {
    let vector: HashMap<String, u64> = match ctx.db_id(db) {
        Some(id) => ctx.store.cursor_vector(id).unwrap_or_default(),
        None => HashMap::new(),
    };
    origins
        .iter()
        .map(|o| (o.clone(), vector.get(o).copied().unwrap_or(0)))
        .collect()
}

fn worker(
    ctx: Arc<ReplCtx>,
    member: Member,
    db: String,
    mut origins: Vec<String>,
    ctl: Receiver<PullCtl>,
) {
    let _live = LiveThread::new(&ctx);
    let stats = ctx.stats.link(&member.name, &db);
    let thread_id = next_thread_id();
    let mut backoff = BACKOFF_MIN;
    let headers = [
        ("X-Skerry-Node", ctx.node_name.clone()),
        ("X-Skerry-Database", db.clone()),
        ("X-Skerry-Kind", "pull".to_string()),
    ];
    loop {
        if ctx.is_stopping() {
            return;
        }
        while let Ok(m) = ctl.try_recv() {
            match m {
                PullCtl::SetOrigins(o) => origins = o,
                PullCtl::Stop => return,
            }
        }
        match Conn::connect(
            &member.host,
            member.port,
            ctx.cfg.bind_ip,
            &headers,
            &ctx.cfg.conn(),
        ) {
            Ok(conn) => match session(
                &ctx,
                &member,
                &db,
                &mut origins,
                &ctl,
                conn,
                &stats,
                thread_id,
            ) {
                Outcome::Stop => return,
                Outcome::Ended { reason, progress } => {
                    log::info!("replication from {} ({db}) ended: {reason}", member.name);
                    stats.set_error(reason);
                    if progress {
                        backoff = BACKOFF_MIN;
                    }
                }
            },
            Err(e) => {
                log::debug!("cannot reach {} for {db}: {e}", member.name);
                stats.set_error(e);
            }
        }
        match ctl.recv_timeout(backoff) {
            Ok(PullCtl::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(PullCtl::SetOrigins(o)) => origins = o,
            Err(RecvTimeoutError::Timeout) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[allow(clippy::too_many_arguments)]
fn session(
    ctx: &Arc<ReplCtx>,
    member: &Member,
    db: &str,
    origins: &mut Vec<String>,
    ctl: &Receiver<PullCtl>,
    mut conn: Conn,
    stats: &Arc<LinkStats>,
    thread_id: u32,
) -> Outcome {
    let sid = ctx.session_id();
    stats.pull.claim(sid, thread_id);
    *stats.nodes.lock().unwrap_or_else(|p| p.into_inner()) = origins.clone();
    let _ = ctx.mgr.send(MgrEvent::SessionUp {
        peer: member.name.clone(),
        db: db.to_string(),
    });
    let outcome = session_loop(ctx, db, origins, ctl, &mut conn, stats);
    stats.pull.release(sid);
    let _ = ctx.mgr.send(MgrEvent::SessionDown {
        peer: member.name.clone(),
        db: db.to_string(),
    });
    outcome
}

fn apply(ctx: &ReplCtx, txns: Vec<Txn>) -> Result<Vec<(String, u64)>, String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    if !ctx.core.send(Input::Replicated {
        txns,
        reply: ReplyTo::Applied(tx),
    }) {
        return Err("the node is stopping".into());
    }
    rx.recv().map_err(|_| "the node is stopping".to_string())
}

fn session_loop(
    ctx: &ReplCtx,
    db: &str,
    origins: &mut Vec<String>,
    ctl: &Receiver<PullCtl>,
    conn: &mut Conn,
    stats: &LinkStats,
) -> Outcome {
    let mut progress = false;
    let ended = |reason: String, progress: bool| Outcome::Ended { reason, progress };
    if let Err(e) = conn.send(&Frame::Subscribe {
        origins: cursors(ctx, db, origins),
    }) {
        return ended(e, false);
    }
    let ping_interval = ctx.cfg.ping_interval;
    let tick = crossbeam_channel::tick(
        (ping_interval / 4).clamp(Duration::from_millis(20), Duration::from_secs(1)),
    );
    loop {
        crossbeam_channel::select! {
            recv(conn.bytes) -> chunk => {
                for incoming in conn.feed(chunk.unwrap_or(None)) {
                    match incoming {
                        Incoming::Frame(Frame::Txns { txns }) => {
                            if txns.is_empty() {
                                continue;
                            }
                            let records: u64 = txns.iter().map(|t| t.ops.len() as u64).sum();
                            let newest = txns.iter().map(|t| t.version).max().unwrap_or(0);
                            let applied = match apply(ctx, txns) {
                                Ok(a) => a,
                                Err(e) => return ended(e, progress),
                            };
                            progress = true;
                            stats.max_received(newest);
                            stats
                                .last_received_local_ms
                                .store(crate::util::time::now_ms(), Ordering::Relaxed);
                            stats.records_received.fetch_add(records, Ordering::Relaxed);
                            if let Err(e) = conn.send(&Frame::Ack { applied }) {
                                return ended(e, progress);
                            }
                        }
                        Incoming::Frame(Frame::Error { reason }) => {
                            return ended(format!("peer stopped the stream: {reason}"), progress)
                        }
                        Incoming::Frame(Frame::NeedCopy { origins }) => {
                            return ended(
                                format!("peer no longer has the transactions after our cursor for {origins:?}; a full copy is needed"),
                                progress,
                            )
                        }
                        Incoming::Frame(_) => {}
                        Incoming::Closed(reason) => return ended(reason, progress),
                    }
                }
            }
            recv(ctl) -> m => match m {
                Ok(PullCtl::SetOrigins(o)) => {
                    *origins = o;
                    *stats.nodes.lock().unwrap_or_else(|p| p.into_inner()) = origins.clone();
                    if let Err(e) = conn.send(&Frame::Subscribe { origins: cursors(ctx, db, origins) }) {
                        return ended(e, progress);
                    }
                }
                Ok(PullCtl::Stop) | Err(_) => {
                    conn.close("replication stopped");
                    return Outcome::Stop;
                }
            },
            recv(tick) -> _ => {
                if ctx.is_stopping() {
                    conn.close("node stopping");
                    return Outcome::Stop;
                }
                if conn.last_rx.elapsed() > ctx.cfg.ping_timeout {
                    return ended(format!("no data or pong within {:?}", ctx.cfg.ping_timeout), progress);
                }
                if conn.last_tx.elapsed() >= ping_interval {
                    if let Err(e) = conn.ping() {
                        return ended(e, progress);
                    }
                }
                if let Some(l) = conn.latency {
                    stats.pull.latency_us.store(l.as_micros() as u64, Ordering::Relaxed);
                }
            }
        }
    }
}
