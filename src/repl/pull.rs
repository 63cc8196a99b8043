//! The receiving side of a link: one thread per (peer, database) that dials the peer,
//! subscribes with this node's cursors, hands every received batch to the core thread, and
//! acknowledges what was committed. Reconnects with backoff (0.5 s doubling to 30 s, reset after
//! a session that received data).

use super::conn::{Conn, Incoming};
use super::copy_recv::{CopyAction, CopyEnv, CopyError, CopyReceiver, CopyState};
use super::link::LinkView;
use super::receiver::{
    Action as RecvAction, Input as RecvInput, Receiver as SessionReceiver, ReceiverEnv,
};
use super::stats::{next_thread_id, LinkStats};
use super::topology::{Carry, Member};
use super::wire::Frame;
use super::{LiveThread, MgrEvent, ReplCtx};
use crate::core::catalog::SYSTEM_DB;
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
    SetOrigins(Carry),
    /// Dial now if waiting out a back-off (and restart the back-off); ignored while connected.
    Redial,
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
    origins: Carry,
    ctl: Receiver<PullCtl>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("repl-pull-{}-{db}", member.name))
        .spawn(move || worker(ctx, member, db, origins, ctl))
}

/// The start_time (epoch ms) of this node's link with a peer (add_node), if any.
fn start_time(ctx: &ReplCtx, peer: &str) -> Option<u64> {
    ctx.policy(peer).start_time
}

/// The current cursors of `db` for the carried origins (committed state, read from the
/// store): the listed ones and, when the link relays, every other origin this node holds that
/// the relay does not exclude (so the peer resumes each from where this node is; an origin
/// missing here has nothing applied and streams from the start of the peer's log). A peer
/// with a `start_time` and no cursor yet is asked for its transactions from that time (never
/// for `system`, whose users and membership every node needs whole).
fn cursors(ctx: &ReplCtx, peer: &str, db: &str, carry: &Carry) -> Vec<(String, u64)> {
    let vector: HashMap<String, u64> = match ctx.db_id(db) {
        Some(id) => ctx.store.cursor_vector(id).unwrap_or_default(),
        None => HashMap::new(),
    };
    let start = if db == SYSTEM_DB {
        None
    } else {
        start_time(ctx, peer)
    };
    let mut out: Vec<(String, u64)> = carry
        .origins
        .iter()
        .map(|o| {
            let v = vector.get(o).copied().unwrap_or(0);
            match start {
                Some(ms) if v == 0 && o == peer => (o.clone(), crate::core::hlc::from_ms(ms)),
                _ => (o.clone(), v),
            }
        })
        .collect();
    let mut relayed: Vec<(String, u64)> = vector
        .into_iter()
        .filter(|(o, v)| *v > 0 && !carry.origins.contains(o) && carry.asked_for(o, &ctx.node_name))
        .collect();
    relayed.sort();
    out.extend(relayed);
    out
}

/// What this node accepts of a received batch (the third enforcement point of a link
/// policy): the peer's own transactions limited to the tables it receives from the peer;
/// relayed origins only over full links, from origins it fully replicates with.
fn accept(ctx: &ReplCtx, peer: &str, db: &str, txns: Vec<Txn>) -> Vec<Txn> {
    let policy = ctx.policy(peer);
    if policy.is_full() && ctx.policies.load().is_empty() {
        return txns;
    }
    txns.into_iter()
        .filter_map(|mut t| {
            if t.origin == peer {
                if !policy.is_full() {
                    t.ops
                        .retain(|op| op.table().is_none_or(|tb| policy.receives_table(db, tb)));
                }
                Some(t)
            } else {
                (policy.complete_for(db) && ctx.policy(&t.origin).complete_for(db)).then_some(t)
            }
        })
        .collect()
}

/// `SKERRY_TEST_COPY_DELAY_MS`: a pause after each committed batch of a received full copy
/// (tests only; unset in production).
fn copy_delay_ms() -> Option<u64> {
    static DELAY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("SKERRY_TEST_COPY_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

fn copy_state_key(db: &str) -> String {
    super::copy_recv::state_key(db)
}

fn load_copy_state(ctx: &ReplCtx, db: &str) -> Option<CopyState> {
    let raw = ctx.store.local(&copy_state_key(db)).ok()??;
    serde_json::from_slice(&raw).ok()
}

/// Whether this session must start with a full copy: an interrupted copy from this peer is
/// resumed; otherwise a copy is needed when this node has nothing of this database from any
/// other node yet (a new member). A node that already has data subscribes from its cursors:
/// a peer's own transactions replay from the start of its log, and a peer whose log no longer
/// reaches back that far answers NeedCopy. (Copying from every peer whose cursor is 0 would
/// copy the whole database once per new member on every node.)
fn needs_copy(ctx: &ReplCtx, peer: &str, db: &str) -> bool {
    // An interrupted copy is resumed from whichever peer serves next.
    if load_copy_state(ctx, db).is_some() {
        return true;
    }
    // The link widened: what it newly covers was skipped before (see LinkPolicy::widens).
    if widened(ctx, peer, db) {
        return true;
    }
    let vector = ctx
        .db_id(db)
        .and_then(|id| ctx.store.cursor_vector(id).ok())
        .unwrap_or_default();
    let has_any = vector
        .iter()
        .any(|(origin, v)| *v > 0 && origin != &ctx.node_name);
    !has_any && (db == SYSTEM_DB || start_time(ctx, peer).is_none())
}

/// The dialing side authenticates the peer too: on the plain port a node is who its address
/// says, so the address reached must be the member's (its name must resolve to it) and the
/// peer must announce that name. A member whose `hdb_nodes` URL was repointed elsewhere, or
/// another node answering at that address, is refused before it can send a single byte of data.
/// Over TLS the peer's certificate (its chain verified by rustls against the trusted CAs, its
/// name against the member's host) must name the member and not be revoked.
fn verify_peer(ctx: &ReplCtx, member: &Member, conn: &Conn) -> Result<(), String> {
    if member.tls {
        let Some(cert) = &conn.peer_cert else {
            return Err(format!("{} presented no certificate", member.name));
        };
        if ctx.is_revoked(Some(cert)) {
            return Err(format!(
                "{} presented certificate {}, which is revoked",
                member.name, cert.serial
            ));
        }
        if !cert.names_include(&member.name) {
            return Err(format!(
                "identity check failed: the certificate of {} names {:?}, not '{}'",
                conn.peer_addr, cert.names, member.name
            ));
        }
    } else if !super::push::name_matches_ip(&member.name, conn.peer_addr.ip()) {
        return Err(format!(
            "identity check failed: dialled '{}' at {}, but that name does not resolve to that address",
            member.name, conn.peer_addr
        ));
    }
    if conn.peer_name.as_deref() != Some(member.name.as_str()) {
        return Err(format!(
            "identity check failed: dialled '{}' at {}, which says it is '{}'",
            member.name,
            conn.peer_addr,
            conn.peer_name.as_deref().unwrap_or("(no name)")
        ));
    }
    Ok(())
}

fn widened(ctx: &ReplCtx, peer: &str, db: &str) -> bool {
    matches!(
        ctx.store.local(&super::cluster_ops::widened_key(peer, db)),
        Ok(Some(_))
    )
}

fn worker(
    ctx: Arc<ReplCtx>,
    member: Member,
    db: String,
    mut origins: Carry,
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
                PullCtl::Redial => {}
                PullCtl::Stop => return,
            }
        }
        let tls = if member.tls {
            ctx.client_tls(Some(&member.name), true, true).map(Some)
        } else {
            Ok(None)
        };
        match tls
            .and_then(|tls| {
                Conn::connect(
                    &member.host,
                    member.port,
                    ctx.cfg.bind_ip,
                    &headers,
                    &ctx.cfg.conn(),
                    tls,
                )
            })
            .and_then(|mut conn| match verify_peer(&ctx, &member, &conn) {
                Ok(()) => Ok(conn),
                Err(e) => {
                    log::warn!("{e}");
                    conn.close("not the node this one dialled");
                    Err(e)
                }
            }) {
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
        let deadline = std::time::Instant::now() + backoff;
        backoff = (backoff * 2).min(BACKOFF_MAX);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match ctl.recv_timeout(left) {
                Ok(PullCtl::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(PullCtl::SetOrigins(o)) => origins = o,
                // The peer was just registered or just dialled us: it is worth a try now,
                // and the back-off starts over.
                Ok(PullCtl::Redial) => {
                    backoff = BACKOFF_MIN;
                    break;
                }
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn session(
    ctx: &Arc<ReplCtx>,
    member: &Member,
    db: &str,
    origins: &mut Carry,
    ctl: &Receiver<PullCtl>,
    mut conn: Conn,
    stats: &Arc<LinkStats>,
    thread_id: u32,
) -> Outcome {
    let sid = ctx.session_id();
    stats.pull.claim(sid, thread_id);
    stats.set_peer_cert(conn.peer_cert.as_ref(), true);
    *stats.nodes.lock().unwrap_or_else(|p| p.into_inner()) = origins.origins.clone();
    let _ = ctx.mgr.send(MgrEvent::SessionUp {
        peer: member.name.clone(),
        db: db.to_string(),
        sid,
    });
    let outcome = session_loop(ctx, &member.name, db, origins, ctl, &mut conn, stats);
    stats.pull.release(sid);
    let _ = ctx.mgr.send(MgrEvent::SessionDown {
        peer: member.name.clone(),
        db: db.to_string(),
        sid,
    });
    outcome
}

/// Most socket chunks and records one streamed batch gathers before it is applied. Small
/// frames (single-record transactions under steady load) are merged; a catch-up frame that
/// already carries thousands of records is applied on its own, as before, so the batch never
/// holds more than one big frame (a 10,000-transaction bound let a catch-up batch reach 20x
/// that in records and the catching-up node's peak RSS went from 58 to 228 MB).
const COALESCE_MAX_CHUNKS: usize = 64;
const COALESCE_MAX_RECORDS: usize = 4_096;

/// True while every incoming item is a transaction frame and they hold fewer than `max`
/// records: the batch may take more.
fn only_txns_below(incoming: &[Incoming], max: usize) -> bool {
    let mut n = 0;
    for i in incoming {
        match i {
            Incoming::Frame(Frame::Txns { txns }) => {
                n += txns.iter().map(|t| t.ops.len()).sum::<usize>();
            }
            _ => return false,
        }
    }
    n < max
}

/// A batch the core has been given, waiting for its commit.
struct InFlight {
    rx: Receiver<Vec<(String, u64)>>,
    records: u64,
    newest: u64,
}

impl ReceiverEnv for LinkView<'_> {
    fn cursors(&mut self, carry: &Carry) -> Vec<(String, u64)> {
        cursors(self.ctx, self.peer, self.db, carry)
    }
    fn receive_filter(&self) -> Option<Vec<String>> {
        self.ctx.policy(self.peer).receive_filter(self.db)
    }
    fn accept(&self, txns: Vec<Txn>) -> Vec<Txn> {
        accept(self.ctx, self.peer, self.db, txns)
    }
}

/// Takes the database's copy slot (one full copy of a database at a time on this node).
/// Returns false if the session must end (stop requested) while waiting.
fn acquire_copy_slot(
    ctx: &ReplCtx,
    peer: &str,
    db: &str,
    ctl: &Receiver<PullCtl>,
    conn: &mut Conn,
    origins: &mut Carry,
) -> Result<bool, Outcome> {
    loop {
        {
            let mut copying = ctx.copying.lock().unwrap_or_else(|p| p.into_inner());
            match copying.get(db) {
                Some(p) if p != peer => {}
                _ => {
                    copying.insert(db.to_string(), peer.to_string());
                    return Ok(true);
                }
            }
        }
        // Another peer's copy of this database is running; answer pings meanwhile.
        crossbeam_channel::select! {
            recv(conn.bytes) -> chunk => {
                for incoming in conn.feed(chunk.unwrap_or(None)) {
                    if let Incoming::Closed(reason) = incoming {
                        return Err(Outcome::Ended { reason, progress: false });
                    }
                }
            }
            recv(ctl) -> m => match m {
                Ok(PullCtl::SetOrigins(o)) => *origins = o,
                Ok(PullCtl::Redial) => {}
                Ok(PullCtl::Stop) | Err(_) => {
                    conn.close("replication stopped");
                    return Err(Outcome::Stop);
                }
            },
            default(Duration::from_millis(100)) => {}
        }
        if ctx.is_stopping() {
            return Err(Outcome::Stop);
        }
    }
}

fn release_copy_slot(ctx: &ReplCtx, peer: &str, db: &str) {
    let mut copying = ctx.copying.lock().unwrap_or_else(|p| p.into_inner());
    if copying.get(db).map(String::as_str) == Some(peer) {
        copying.remove(db);
    }
}

/// Ends a session whose peer sent something that fails validation (logged, then retried).
fn invalid(peer: &str, db: &str, conn: &mut Conn, e: String) -> Outcome {
    log::warn!("{peer} sent invalid full-copy data for {db}: {e}; disconnecting");
    conn.close("invalid data");
    Outcome::Ended {
        reason: format!("peer sent invalid data: {e}"),
        progress: false,
    }
}

/// Receives a full copy of `db` from the peer and merges it through the core, committing the
/// resume position with every batch.
/// `forced`: the peer said our cursors predate its log (NeedCopy), so copy even though we have
/// data from it.
#[allow(clippy::too_many_arguments)]
fn receive_copy(
    ctx: &ReplCtx,
    peer: &str,
    db: &str,
    ctl: &Receiver<PullCtl>,
    conn: &mut Conn,
    stats: &LinkStats,
    forced: bool,
    origins: &mut Carry,
) -> Result<(), Outcome> {
    let ended = |reason: String| Outcome::Ended {
        reason,
        progress: true,
    };
    if !acquire_copy_slot(ctx, peer, db, ctl, conn, origins)? {
        return Ok(());
    }
    let result = (|| {
        // Another copy may have finished while we waited: nothing to do then.
        if !forced && !needs_copy(ctx, peer, db) {
            return Ok(());
        }
        let previous = load_copy_state(ctx, db);
        log::info!(
            "full copy of {db} from {peer} (resuming after table '{}')",
            previous.as_ref().map_or("", |s| s.table.as_str())
        );
        let (mut copy, request) = CopyReceiver::start(peer, db, previous);
        conn.send(&request).map_err(ended)?;
        stats.copying_in.store(true, Ordering::Relaxed);
        stats.copy_received.store(0, Ordering::Relaxed);
        let env = LinkView::new(ctx, peer, db);
        let bytes = conn.bytes.clone();
        loop {
            let chunk = match bytes.recv_timeout(ctx.cfg.ping_timeout) {
                Ok(c) => c,
                Err(_) => {
                    return Err(ended(format!(
                        "no copy data within {:?}",
                        ctx.cfg.ping_timeout
                    )))
                }
            };
            match ctl.try_recv() {
                Ok(PullCtl::Stop) => {
                    conn.close("replication stopped");
                    return Err(Outcome::Stop);
                }
                // Applied to the subscription that follows the copy.
                Ok(PullCtl::SetOrigins(o)) => *origins = o,
                Ok(PullCtl::Redial) | Err(_) => {}
            }
            for incoming in conn.feed(chunk) {
                let frame = match incoming {
                    Incoming::Frame(f) => f,
                    Incoming::Closed(reason) => return Err(ended(reason)),
                };
                let actions = match copy.step(frame, &env) {
                    Ok(a) => a,
                    Err(CopyError::Invalid(e)) => return Err(invalid(peer, db, conn, e)),
                    Err(CopyError::Ended(e)) => return Err(ended(e)),
                };
                for action in actions {
                    perform_copy(ctx, conn, peer, db, stats, action)?;
                }
                if copy.is_done() {
                    log::info!(
                        "full copy of {db} from {peer} done ({} records)",
                        stats.copy_received.load(Ordering::Relaxed)
                    );
                    if widened(ctx, peer, db) {
                        let _ = ctx.core.execute(
                            crate::core::op::WriteOp::SetLocal {
                                key: super::cluster_ops::widened_key(peer, db),
                                value: None,
                            },
                            crate::core::txn::Actor::None,
                        );
                    }
                    return Ok(());
                }
            }
        }
    })();
    stats.copying_in.store(false, Ordering::Relaxed);
    release_copy_slot(ctx, peer, db);
    result
}

impl CopyEnv for LinkView<'_> {
    fn receives_table(&self, table: &str) -> bool {
        self.ctx.policy(self.peer).receives_table(self.db, table)
    }
    fn replicates_db(&self, db: &str) -> bool {
        self.ctx.cfg.replicates_db(db)
    }
}

/// Hands one core input to the core thread and waits until it is committed.
fn commit(ctx: &ReplCtx, input: impl FnOnce(ReplyTo) -> Input<ReplyTo>) -> Result<(), Outcome> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    if !ctx.core.send(input(ReplyTo::Applied(tx))) || rx.recv().is_err() {
        return Err(Outcome::Ended {
            reason: "the node is stopping".into(),
            progress: true,
        });
    }
    Ok(())
}

/// Performs one of the [`CopyReceiver`]'s actions.
fn perform_copy(
    ctx: &ReplCtx,
    conn: &mut Conn,
    peer: &str,
    db: &str,
    stats: &LinkStats,
    action: CopyAction,
) -> Result<(), Outcome> {
    match action {
        CopyAction::Started { total } => {
            stats.copy_total.store(total, Ordering::Relaxed);
            stats
                .copy_started_ms
                .store(crate::util::time::now_ms(), Ordering::Relaxed);
        }
        CopyAction::EnsureDatabases(names) => {
            commit(ctx, |reply| Input::EnsureDatabases { names, reply })?;
        }
        CopyAction::Rows { table, rows, state } => {
            let n = rows.len() as u64;
            let created = rows.is_empty();
            if let Some(v) = rows.iter().map(|r| r.version).max() {
                stats.max_received(v);
            }
            commit(ctx, |reply| Input::CopyRows {
                db: db.to_string(),
                table,
                rows,
                state,
                reply,
            })?;
            if !created {
                stats.copy_received.fetch_add(n, Ordering::Relaxed);
                // Test hook (like Harper's HARPER_TEST_COPY_COMMIT_DELAY_ONCE_DB): slows each
                // committed copy batch so tests can kill a node mid-copy.
                if let Some(ms) = copy_delay_ms() {
                    std::thread::sleep(Duration::from_millis(ms));
                }
                stats.records_received.fetch_add(n, Ordering::Relaxed);
                stats
                    .last_received_local_ms
                    .store(crate::util::time::now_ms(), Ordering::Relaxed);
            }
        }
        CopyAction::Ack => conn
            .send(&Frame::Ack {
                applied: Vec::new(),
            })
            .map_err(|reason| Outcome::Ended {
                reason,
                progress: true,
            })?,
        CopyAction::Done { vector } => {
            commit(ctx, |reply| Input::CopyDone {
                db: db.to_string(),
                peer: peer.to_string(),
                vector,
                state_key: copy_state_key(db),
                reply,
            })?;
        }
    }
    Ok(())
}

fn session_loop(
    ctx: &ReplCtx,
    peer: &str,
    db: &str,
    origins: &mut Carry,
    ctl: &Receiver<PullCtl>,
    conn: &mut Conn,
    stats: &LinkStats,
) -> Outcome {
    let mut progress = false;
    let ended = |reason: String, progress: bool| Outcome::Ended { reason, progress };
    if needs_copy(ctx, peer, db) {
        if let Err(o) = receive_copy(ctx, peer, db, ctl, conn, stats, false, origins) {
            return o;
        }
        progress = true;
    }
    let ping_interval = ctx.cfg.ping_interval;
    let tick = crossbeam_channel::tick(
        (ping_interval / 4).clamp(Duration::from_millis(20), Duration::from_secs(1)),
    );
    let mut in_flight: std::collections::VecDeque<InFlight> = Default::default();
    let mut env = LinkView::new(ctx, peer, db);
    let (mut session, first) = SessionReceiver::start(peer, db, origins.clone(), &mut env);
    let mut actions: Vec<RecvAction> = first;
    loop {
        // Perform what the session asked for, in order.
        for action in std::mem::take(&mut actions) {
            match action {
                RecvAction::Send(frame) => {
                    if let Frame::Subscribe { origins: o, .. } = &frame {
                        // The origins shown in cluster_status (`nodes`) follow every
                        // subscription sent.
                        *stats.nodes.lock().unwrap_or_else(|p| p.into_inner()) =
                            o.iter().map(|(o, _)| o.clone()).collect();
                    }
                    if let Err(e) = conn.send(&frame) {
                        return ended(e, progress);
                    }
                }
                RecvAction::Submit(txns) => {
                    let records: u64 = txns.iter().map(|t| t.ops.len() as u64).sum();
                    let newest = txns.iter().map(|t| t.version).max().unwrap_or(0);
                    let (tx, rx) = crossbeam_channel::bounded(1);
                    if !ctx.core.send(Input::Replicated {
                        txns,
                        reply: ReplyTo::Applied(tx),
                    }) {
                        return ended("the node is stopping".into(), progress);
                    }
                    in_flight.push_back(InFlight {
                        rx,
                        records,
                        newest,
                    });
                    progress = true;
                }
                RecvAction::Copy => {
                    *origins = session.carry_mut().clone();
                    if let Err(o) = receive_copy(ctx, peer, db, ctl, conn, stats, true, origins) {
                        return o;
                    }
                    *session.carry_mut() = origins.clone();
                    progress = true;
                    actions.extend(session.step(RecvInput::CopyDone, &mut env));
                }
                RecvAction::Invalid(e) => {
                    conn.close("invalid data");
                    return ended(format!("peer sent invalid data: {e}"), progress);
                }
                RecvAction::End(reason) => return ended(reason, progress),
            }
        }
        if !actions.is_empty() {
            continue;
        }
        let oldest = in_flight
            .front()
            .map(|f| f.rx.clone())
            .unwrap_or_else(crossbeam_channel::never);
        // Frames are read only while the session can take them: a link holds at most its
        // pipeline and one gathered batch.
        let bytes = if session.wants_frames() {
            conn.bytes.clone()
        } else {
            crossbeam_channel::never()
        };
        crossbeam_channel::select! {
            recv(oldest) -> applied => {
                let Ok(applied) = applied else {
                    return ended("the node is stopping".into(), progress);
                };
                if let Some(f) = in_flight.pop_front() {
                    stats.max_received(f.newest);
                    stats
                        .last_received_local_ms
                        .store(crate::util::time::now_ms(), Ordering::Relaxed);
                    stats.records_received.fetch_add(f.records, Ordering::Relaxed);
                }
                progress = true;
                actions = session.step(RecvInput::Committed { applied }, &mut env);
            }
            recv(bytes) -> chunk => {
                let mut incoming = conn.feed(chunk.unwrap_or(None));
                // Frames that arrived while the previous batch was committing are applied as one
                // batch: one commit (one fsync) for all of them instead of one per frame, so a
                // receiver keeps up with a sender that commits faster than it can sync per frame
                // (lag grew without bound at 5,000 writes/s on a loaded box). Bounded by chunks
                // and records; a frame of another kind ends the batch so order is kept.
                let mut chunks = 1;
                while chunks < COALESCE_MAX_CHUNKS && only_txns_below(&incoming, COALESCE_MAX_RECORDS) {
                    let Ok(c) = conn.bytes.try_recv() else { break };
                    chunks += 1;
                    incoming.extend(conn.feed(c));
                }
                let mut frames = Vec::with_capacity(incoming.len());
                let mut closed = None;
                for i in incoming {
                    match i {
                        Incoming::Frame(f) => frames.push(f),
                        Incoming::Closed(reason) => {
                            closed = Some(reason);
                            break;
                        }
                    }
                }
                actions = session.step(RecvInput::Frames(frames), &mut env);
                if let Some(reason) = closed {
                    // What arrived before the close is still handed over; then the session ends.
                    actions.push(RecvAction::End(reason));
                }
            }
            recv(ctl) -> m => match m {
                Ok(PullCtl::SetOrigins(o)) => {
                    *origins = o.clone();
                    actions = session.step(RecvInput::SetOrigins(o), &mut env);
                }
                Ok(PullCtl::Redial) => {}
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
                if ctx.is_revoked(conn.peer_cert.as_ref()) {
                    conn.close("certificate revoked");
                    return ended("the peer's certificate was revoked".into(), progress);
                }
                if conn.last_rx.elapsed() > ctx.cfg.ping_timeout {
                    return ended(format!("no data or pong within {:?}", ctx.cfg.ping_timeout), progress);
                }
                if conn.ping_due(ping_interval) {
                    if let Err(e) = conn.ping() {
                        return ended(e, progress);
                    }
                }
                if let Some(l) = conn.latency {
                    stats.pull.latency_us.store((l.as_micros() as u64).max(1), Ordering::Relaxed);
                }
            }
        }
    }
}
